//! Pre- and post-processing pipelines (issue 15), per version, the same over every
//! API. Fixtures: `tests/fixtures/preprocess/` made by
//! python/make_preprocess_fixtures.py, with numpy's softmax and the classification
//! strings Triton writes (`"%g:index:label"`).
//!
//! Labels: a logits model with `[postprocess] labels, softmax, top_k` answers
//! softmaxed scores (V2 REST/gRPC, TF Serving REST), `"classification": k` on an
//! output gives Triton's strings (V2 REST and gRPC), TF Serving classify (REST and
//! gRPC) gives the top-k labels with their scores; a labels file that does not fit
//! the model fails the load with a clear message.

mod common;

use common::{install_model, root_path, TestServer};
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use ferroserve_proto::inference::{self as v2, infer_parameter, InferTensorContents};
use ferroserve_proto::tensorflow as tf;
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec};
use serde_json::{json, Value};
use tonic::transport::Channel;

const LOGITS: &str = "tests/fixtures/preprocess/logits";
const FEATURES: [&str; 4] = ["a", "b", "c", "d"];

fn expected() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root_path(&format!("{LOGITS}/expected.json"))).unwrap(),
    )
    .unwrap()
}

fn rows(exp: &Value) -> Vec<Vec<f32>> {
    exp["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// Installs the logits model as `name` with `config` (and its labels.txt, or
/// `labels` instead when given).
fn install(repo: &std::path::Path, name: &str, config: &str, labels: Option<&str>) {
    let dest = install_model(repo, name, 1, &root_path(&format!("{LOGITS}/model.onnx")));
    let labels_path = dest.with_file_name("labels.txt");
    match labels {
        Some(text) => std::fs::write(labels_path, text).unwrap(),
        None => {
            std::fs::copy(root_path(&format!("{LOGITS}/labels.txt")), labels_path).unwrap();
        }
    }
    std::fs::write(repo.join(name).join("config.toml"), config).unwrap();
}

const LABELLED: &str = "feature_names = [\"a\", \"b\", \"c\", \"d\"]\n\
    [postprocess]\nlabels = \"labels.txt\"\nsoftmax = true\ntop_k = 2\n";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn expected_strings(exp: &Value, key: &str, k: usize) -> Vec<String> {
    exp[key][k.to_string()]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(strings)
        .collect()
}

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.grpc_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_softmax_and_classification_answer_as_the_reference_over_every_api() {
    let exp = expected();
    let rows = rows(&exp);
    let n = rows.len();
    let flat: Vec<f32> = rows.concat();
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "labelled", LABELLED, None);
    install(repo.path(), "raw", "", None);
    install(
        repo.path(),
        "short_labels",
        "[postprocess]\nlabels = \"labels.txt\"\n",
        Some("cat\ndog\nbird\n"),
    );
    install(
        repo.path(),
        "no_labels_file",
        "[postprocess]\nlabels = \"classes.txt\"\n",
        None,
    );
    let server = TestServer::start(repo.path()).await;
    let v2_input = json!([{"name": "input", "datatype": "FP32", "shape": [n, 4], "data": flat}]);

    // V2 REST: the score output comes back softmaxed, as numpy's softmax.
    let (status, body) = server
        .post_json("/v2/models/labelled/infer", &json!({"inputs": v2_input}))
        .await;
    assert_eq!(status, 200, "{body}");
    let got = body["outputs"][0]["data"].as_array().unwrap();
    let want: Vec<f64> = exp["softmax"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g.as_f64().unwrap() - w).abs() <= 1e-6, "{g} vs {w}");
    }

    // The classification extension, every k, labelled (softmaxed) and not (raw).
    for k in 1..=4 {
        for (model, key) in [
            ("labelled", "classification_softmax"),
            ("raw", "classification_logits_unlabelled"),
        ] {
            let (status, body) = server
                .post_json(
                    &format!("/v2/models/{model}/infer"),
                    &json!({"inputs": v2_input, "outputs": [
                        {"name": "logits", "parameters": {"classification": k}}
                    ]}),
                )
                .await;
            assert_eq!(status, 200, "{model} k={k}: {body}");
            let out = &body["outputs"][0];
            assert_eq!(out["datatype"], "BYTES", "{body}");
            assert_eq!(out["shape"], json!([n, k]), "{body}");
            assert_eq!(
                strings(&out["data"]),
                expected_strings(&exp, key, k),
                "{model} k={k}"
            );
        }
    }
    // More classes than the model has: every class, as Triton.
    let (status, body) = server
        .post_json(
            "/v2/models/labelled/infer",
            &json!({"inputs": v2_input, "outputs": [
                {"name": "logits", "parameters": {"classification": 10}}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([n, 4]));
    for bad in [json!(0), json!(-1), json!("two"), json!(1.5)] {
        let (status, body) = server
            .post_json(
                "/v2/models/labelled/infer",
                &json!({"inputs": v2_input, "outputs": [
                    {"name": "logits", "parameters": {"classification": bad}}
                ]}),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("classification"),
            "{body}"
        );
    }

    // V2 gRPC: the same strings.
    let mut v2_client = GrpcInferenceServiceClient::new(channel(&server).await);
    let mut parameters = std::collections::HashMap::new();
    parameters.insert(
        "classification".to_string(),
        v2::InferParameter {
            parameter_choice: Some(infer_parameter::ParameterChoice::Int64Param(2)),
        },
    );
    let answer = v2_client
        .model_infer(v2::ModelInferRequest {
            model_name: "labelled".into(),
            inputs: vec![InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![n as i64, 4],
                contents: Some(InferTensorContents {
                    fp32_contents: flat.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            outputs: vec![InferRequestedOutputTensor {
                name: "logits".into(),
                parameters,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let out = &answer.outputs[0];
    assert_eq!(out.datatype, "BYTES");
    assert_eq!(out.shape, vec![n as i64, 2]);
    let got: Vec<String> = match (&out.contents, answer.raw_output_contents.first()) {
        (Some(c), _) => c
            .bytes_contents
            .iter()
            .map(|b| String::from_utf8(b.clone()).unwrap())
            .collect(),
        (None, Some(_)) => panic!("raw output for a JSON-free request"),
        (None, None) => panic!("no contents"),
    };
    assert_eq!(got, expected_strings(&exp, "classification_softmax", 2));

    // TF Serving REST :classify: the top 2 labels with their softmaxed scores.
    let examples: Vec<Value> = rows
        .iter()
        .map(|r| {
            Value::Object(
                FEATURES
                    .iter()
                    .zip(r)
                    .map(|(f, v)| (f.to_string(), json!(v)))
                    .collect(),
            )
        })
        .collect();
    let (status, body) = server
        .post_json(
            "/v1/models/labelled:classify",
            &json!({"examples": examples}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let top2 = exp["classify_top2"].as_array().unwrap();
    let result = body["result"].as_array().unwrap();
    assert_eq!(result.len(), n);
    for (got, want) in result.iter().zip(top2) {
        let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
        assert_eq!(got.len(), 2, "{body}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g[0], w[0], "{body}");
            assert!((g[1].as_f64().unwrap() - w[1].as_f64().unwrap()).abs() <= 1e-6);
        }
    }

    // TF Serving gRPC Classify: the same.
    let mut tfs_client = PredictionServiceClient::new(channel(&server).await);
    let example = |row: &[f32]| tf::Example {
        features: Some(tf::Features {
            feature: FEATURES
                .iter()
                .zip(row)
                .map(|(name, v)| {
                    (
                        name.to_string(),
                        tf::Feature {
                            kind: Some(tf::feature::Kind::FloatList(tf::FloatList {
                                value: vec![*v],
                            })),
                        },
                    )
                })
                .collect(),
        }),
    };
    let classified = tfs_client
        .classify(tfs::ClassificationRequest {
            model_spec: Some(ModelSpec {
                name: "labelled".into(),
                ..Default::default()
            }),
            input: Some(tfs::Input {
                kind: Some(tfs::input::Kind::ExampleList(tfs::ExampleList {
                    examples: rows.iter().map(|r| example(r)).collect(),
                })),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let result = classified.result.unwrap();
    for (got, want) in result.classifications.iter().zip(top2) {
        let want = want.as_array().unwrap();
        assert_eq!(got.classes.len(), 2);
        for (g, w) in got.classes.iter().zip(want) {
            assert_eq!(g.label, w[0].as_str().unwrap());
            assert!((g.score as f64 - w[1].as_f64().unwrap()).abs() <= 1e-6);
        }
    }

    // A labels file that does not fit the model, or is missing, fails the load
    // with a message naming the setting.
    for (name, words) in [
        (
            "short_labels",
            "has 3 labels but output \"logits\" has 4 classes",
        ),
        ("no_labels_file", "cannot read classes.txt"),
    ] {
        let (status, body) = server.get(&format!("/v1/models/{name}")).await;
        assert_eq!(status, 200, "{body}");
        let v = &body["model_version_status"][0];
        assert_eq!(v["state"], "ERROR", "{name}: {body}");
        let msg = v["status"]["error_message"].as_str().unwrap();
        assert!(msg.contains("postprocess.labels"), "{name}: {msg}");
        assert!(msg.contains(words), "{name}: {msg}");
        assert!(
            !msg.contains(repo.path().to_str().unwrap()),
            "{name}: {msg}"
        );
    }
    server.stop().await;
}
