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

#[path = "../common/mod.rs"]
mod common;
mod images;
mod text;

use images::{image_cases, image_table, v2_binary_images, IMAGES};
use text::{install_text_model, MINILM};

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
    let mut v2_client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
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
    let result = body["results"].as_array().unwrap();
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
    let mut tfs_client = PredictionServiceClient::new(server.grpc_channel().await);
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
        assert_eq!(v["state"], "END", "{name}: {body}");
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

fn numbers(v: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            other => out.push(other.as_f64().unwrap_or_else(|| panic!("{other}"))),
        }
    }
    walk(v, &mut out);
    out
}

fn ints(v: &Value) -> Vec<i64> {
    numbers(v).into_iter().map(|x| x as i64).collect()
}

/// `(label, score)` pairs of a simple answer's `top_classes` row.
fn top_classes_row(row: &Value) -> Vec<(String, f64)> {
    row.as_array()
        .unwrap_or_else(|| panic!("{row}"))
        .iter()
        .map(|c| {
            (
                c["label"].as_str().unwrap().to_string(),
                c["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The k best of a softmax row with the fixture's labels, best first.
fn best_classes(softmax: &Value, labels: &[String], k: usize) -> Vec<(String, f64)> {
    let mut row: Vec<(String, f64)> = labels.iter().cloned().zip(numbers(softmax)).collect();
    row.sort_by(|a, b| b.1.total_cmp(&a.1));
    row.truncate(k);
    row
}

fn assert_classes(got: &[(String, f64)], want: &[(String, f64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.0, w.0, "{what}: {got:?} vs {want:?}");
        assert!((g.1 - w.1).abs() <= 1e-6, "{what}: {got:?} vs {want:?}");
    }
}

/// The simple API answers a labelled model's top-k classes with their (softmaxed)
/// scores as `top_classes`: k from the request's `top_k`, else the config's, else
/// every class; a bad `top_k`, or one sent to a model without labels, is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_api_answers_the_top_k_labels_with_scores() {
    let exp = expected();
    let rows = rows(&exp);
    let labels: Vec<String> = std::fs::read_to_string(root_path(&format!("{LOGITS}/labels.txt")))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let softmax = exp["softmax"].as_array().unwrap();
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "labelled", LABELLED, None);
    install(
        repo.path(),
        "every_class",
        "[postprocess]\nlabels = \"labels.txt\"\nsoftmax = true\n",
        None,
    );
    install(repo.path(), "raw", "", None);
    let server = TestServer::start(repo.path()).await;

    // One row: single values; the config's top_k (2).
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "labelled", "features": rows[0]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_classes(
        &top_classes_row(&body["top_classes"]),
        &best_classes(&softmax[0], &labels, 2),
        "config top_k",
    );
    // The prediction is still the scores.
    assert_eq!(numbers(&body["prediction"]).len(), 4, "{body}");

    // The request's top_k wins, over every row; by name and in the path too.
    for k in 1..=4 {
        let (status, body) = server
            .post_json("/predict/labelled", &json!({"features": rows, "top_k": k}))
            .await;
        assert_eq!(status, 200, "{body}");
        let got = body["top_classes"].as_array().unwrap();
        assert_eq!(got.len(), rows.len(), "{body}");
        for (i, row) in got.iter().enumerate() {
            assert_classes(
                &top_classes_row(row),
                &best_classes(&softmax[i], &labels, k),
                &format!("k={k} row {i}"),
            );
        }
    }
    let named: Value = FEATURES
        .iter()
        .zip(&rows[1])
        .map(|(f, v)| (f.to_string(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "labelled", "features": named, "top_k": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_classes(
        &top_classes_row(&body["top_classes"]),
        &best_classes(&softmax[1], &labels, 3),
        "named features",
    );

    // No top_k anywhere: every class, best first.
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "every_class", "features": rows[2]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_classes(
        &top_classes_row(&body["top_classes"]),
        &best_classes(&softmax[2], &labels, 4),
        "every class",
    );
    // More than the model has: every class.
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "labelled", "features": rows[2], "top_k": 9}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["top_classes"].as_array().unwrap().len(), 4, "{body}");

    // Without labels: no top_classes, and asking for them is a 400.
    let (status, body) = server
        .post_json("/predict", &json!({"model_id": "raw", "features": rows[0]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("top_classes").is_none(), "{body}");
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "raw", "features": rows[0], "top_k": 2}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("top_k") && msg.contains("[postprocess] labels"),
        "{msg}"
    );
    for bad in [json!(0), json!(-1), json!(1.5), json!("two")] {
        let (status, body) = server
            .post_json(
                "/predict",
                &json!({"model_id": "labelled", "features": rows[0], "top_k": bad}),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].as_str().unwrap().contains("top_k"), "{body}");
    }
    server.stop().await;
}

/// A model's inputs and outputs in metadata, as `(name, datatype, shape)`.
type Specs = Vec<(String, String, Vec<i64>)>;

fn v2_specs(list: &Value) -> Specs {
    list.as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["datatype"].as_str().unwrap().to_string(),
                ints(&s["shape"]),
            )
        })
        .collect()
}

fn spec(name: &str, datatype: &str, shape: &[i64]) -> (String, String, Vec<i64>) {
    (name.to_string(), datatype.to_string(), shape.to_vec())
}

/// TF Serving REST's signature inputs or outputs (a map by key), sorted by name,
/// with the dtype written as V2 writes it.
fn tfs_rest_specs(map: &Value) -> Specs {
    let mut specs: Specs = map
        .as_object()
        .unwrap_or_else(|| panic!("{map}"))
        .iter()
        .map(|(name, info)| {
            let dims = info["tensor_shape"]["dim"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["size"].as_str().unwrap().parse::<i64>().unwrap())
                .collect();
            (
                name.clone(),
                tf_to_v2(info["dtype"].as_str().unwrap()),
                dims,
            )
        })
        .collect();
    specs.sort();
    specs
}

fn tf_to_v2(dtype: &str) -> String {
    match dtype {
        "DT_STRING" => "BYTES",
        "DT_FLOAT" => "FP32",
        "DT_INT64" => "INT64",
        other => panic!("unexpected dtype {other}"),
    }
    .to_string()
}

fn tfs_grpc_specs(map: &std::collections::HashMap<String, tf::TensorInfo>) -> Specs {
    let mut specs: Specs = map
        .iter()
        .map(|(name, info)| {
            let dtype = match tf::DataType::try_from(info.dtype).unwrap() {
                tf::DataType::DtString => "DT_STRING",
                tf::DataType::DtFloat => "DT_FLOAT",
                tf::DataType::DtInt64 => "DT_INT64",
                other => panic!("unexpected dtype {other:?}"),
            };
            let dims = info
                .tensor_shape
                .as_ref()
                .unwrap()
                .dim
                .iter()
                .map(|d| d.size)
                .collect();
            (name.clone(), tf_to_v2(dtype), dims)
        })
        .collect();
    specs.sort();
    specs
}

/// Metadata describes the request a client sends once the pipeline stands in
/// front of the model, over V2 REST and gRPC and TF Serving REST and gRPC: an
/// image model takes encoded images (BYTES / DT_STRING), a model with a tokenizer
/// one text input instead of input_ids, attention_mask and token_type_ids, pooled
/// embeddings are `[n, dim]`; a labelled classifier still answers its scores; a
/// model without a pipeline lists its graph's tensors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_describes_what_the_client_sends_over_every_api() {
    use ferroserve_proto::prost::Message as _;
    let fixture = image_cases();
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "image",
        1,
        &root_path(&format!("{IMAGES}/identity_nchw3.onnx")),
    );
    std::fs::write(
        repo.path().join("image/config.toml"),
        format!(
            "warmup = false\n{}",
            image_table(&fixture["configs"]["imagenet"])
        ),
    )
    .unwrap();
    install_model(
        repo.path(),
        "graph",
        1,
        &root_path(&format!("{IMAGES}/identity_nchw3.onnx")),
    );
    install_text_model(
        repo.path(),
        "embed",
        "model.onnx",
        "warmup = false\n[preprocess]\ntokenizer = \"tokenizer.json\"\n\
         [postprocess]\npooling = \"mean\"\nnormalize = true\n",
    );
    install_text_model(
        repo.path(),
        "echo",
        "echo.onnx",
        "warmup = false\n[preprocess]\ntokenizer = \"tokenizer.json\"\n",
    );
    install(repo.path(), "labelled", LABELLED, None);
    let server = TestServer::start(repo.path()).await;

    let bytes_in = |name: &str| vec![spec(name, "BYTES", &[-1])];
    let mut echo_outputs = vec![
        spec("attention_mask_out", "INT64", &[-1, -1]),
        spec("input_ids_out", "INT64", &[-1, -1]),
        spec("token_type_ids_out", "INT64", &[-1, -1]),
    ];
    echo_outputs.sort();
    let cases: Vec<(&str, Specs, Specs)> = vec![
        (
            "image",
            bytes_in("image"),
            vec![spec("pixels", "FP32", &[-1, 3, 24, 32])],
        ),
        (
            "graph",
            vec![spec("image", "FP32", &[-1, 3, 24, 32])],
            vec![spec("pixels", "FP32", &[-1, 3, 24, 32])],
        ),
        (
            "embed",
            bytes_in("text"),
            vec![spec("last_hidden_state", "FP32", &[-1, 16])],
        ),
        ("echo", bytes_in("text"), echo_outputs),
        (
            "labelled",
            vec![spec("input", "FP32", &[-1, 4])],
            vec![spec("logits", "FP32", &[-1, 4])],
        ),
    ];
    let sorted = |mut s: Specs| {
        s.sort();
        s
    };
    let mut v2_client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let mut tfs_client = PredictionServiceClient::new(server.grpc_channel().await);
    for (model, inputs, outputs) in &cases {
        // V2 REST.
        let (status, body) = server.get(&format!("/v2/models/{model}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            &sorted(v2_specs(&body["inputs"])),
            inputs,
            "{model}: {body}"
        );
        assert_eq!(
            &sorted(v2_specs(&body["outputs"])),
            outputs,
            "{model}: {body}"
        );

        // V2 gRPC.
        let meta = v2_client
            .model_metadata(v2::ModelMetadataRequest {
                name: model.to_string(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let grpc = |list: &[v2::model_metadata_response::TensorMetadata]| {
            sorted(
                list.iter()
                    .map(|t| (t.name.clone(), t.datatype.clone(), t.shape.clone()))
                    .collect(),
            )
        };
        assert_eq!(&grpc(&meta.inputs), inputs, "{model}: {meta:?}");
        assert_eq!(&grpc(&meta.outputs), outputs, "{model}: {meta:?}");

        // TF Serving REST.
        let (status, body) = server.get(&format!("/v1/models/{model}/metadata")).await;
        assert_eq!(status, 200, "{body}");
        let def = &body["metadata"]["signature_def"]["signature_def"]["serving_default"];
        assert_eq!(&tfs_rest_specs(&def["inputs"]), inputs, "{model}: {body}");
        assert_eq!(&tfs_rest_specs(&def["outputs"]), outputs, "{model}: {body}");

        // TF Serving gRPC.
        let meta = tfs_client
            .get_model_metadata(tfs::GetModelMetadataRequest {
                model_spec: Some(ModelSpec {
                    name: model.to_string(),
                    ..Default::default()
                }),
                metadata_field: vec!["signature_def".into()],
            })
            .await
            .unwrap()
            .into_inner();
        let map = tfs::SignatureDefMap::decode(&*meta.metadata["signature_def"].value).unwrap();
        let def = &map.signature_def["serving_default"];
        assert_eq!(&tfs_grpc_specs(&def.inputs), inputs, "{model}");
        assert_eq!(&tfs_grpc_specs(&def.outputs), outputs, "{model}");
    }

    // What metadata says is what the model takes: the image input takes an encoded
    // image, the text input a text.
    let photo = std::fs::read(root_path(&format!("{IMAGES}/photo.png"))).unwrap();
    let (status, body) = v2_binary_images(&server, "image", &[photo]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([1, 3, 24, 32]), "{body}");
    let (status, body) = server
        .post_json(
            "/v2/models/embed/infer",
            &json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([1, 16]), "{body}");
    server.stop().await;
}

/// A file of an upload: its name and bytes.
type UploadFile<'a> = (&'a str, Vec<u8>);

/// `POST /upload_model` with the model `file` and `asset` files after it.
async fn upload_with_assets(
    server: &TestServer,
    model: &str,
    file: (&str, Vec<u8>),
    assets: &[(&str, Vec<u8>)],
) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new().text("model_id", model.to_string());
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(file.1).file_name(file.0.to_string()),
    );
    for (name, bytes) in assets {
        form = form.part(
            "asset",
            reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.to_string()),
        );
    }
    server.post_multipart("/upload_model", form).await
}

/// The versions of a model on disk, ascending.
fn versions_on_disk(repo: &std::path::Path, model: &str) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(repo.join(model))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    v.sort_unstable();
    v
}

/// An upload is checked by building the version's pipeline from its config.toml
/// and the files sent with it (`asset` parts): a labels file, tokenizer or image
/// setting that does not fit the model is a 400 naming the problem, and nothing
/// is stored (the version served before keeps serving, its files untouched); a
/// fitting one serves at once with its labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_whose_pipeline_does_not_fit_are_refused_and_change_nothing() {
    let repo = tempfile::tempdir().unwrap();
    let read = |path: &str| std::fs::read(root_path(path)).unwrap();
    let logits = read(&format!("{LOGITS}/model.onnx"));
    let labels = read(&format!("{LOGITS}/labels.txt"));
    for (model, config) in [
        ("labelled", LABELLED.to_string()),
        (
            "text",
            "[preprocess]\ntokenizer = \"tokenizer.json\"\n".to_string(),
        ),
        (
            "image",
            "[preprocess]\nimage = { width = 64, height = 24 }\n".to_string(),
        ),
        ("jieba", "[preprocess]\nsegmenter = \"jieba\"\n".to_string()),
    ] {
        std::fs::create_dir_all(repo.path().join(model)).unwrap();
        std::fs::write(repo.path().join(model).join("config.toml"), config).unwrap();
    }
    let server = TestServer::start(repo.path()).await;

    // A fitting upload: the model with its labels file serves at once, labelled.
    let (status, body) = upload_with_assets(
        &server,
        "labelled",
        ("logits.onnx", logits.clone()),
        &[("labels.txt", labels.clone())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1, "{body}");
    let stored = repo.path().join("labelled/1");
    assert_eq!(std::fs::read(stored.join("labels.txt")).unwrap(), labels);
    assert!(stored.join("model.onnx").exists());
    let row = rows(&expected())[0].clone();
    let (status, answer) = server
        .post_json(
            "/predict",
            &json!({"model_id": "labelled", "features": row}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 1);
    assert_eq!(
        answer["top_classes"].as_array().unwrap().len(),
        2,
        "{answer}"
    );

    // Uploads that do not fit, each refused with the setting and the problem.
    let cases: Vec<(&str, UploadFile, Vec<UploadFile>, &[&str])> = vec![
        (
            "labelled",
            ("logits.onnx", logits.clone()),
            vec![("labels.txt", b"cat\ndog\nbird\n".to_vec())],
            &[
                "postprocess.labels",
                "has 3 labels but output \"logits\" has 4 classes",
            ],
        ),
        (
            "labelled",
            ("logits.onnx", logits.clone()),
            vec![],
            &["postprocess.labels", "cannot read labels.txt"],
        ),
        (
            "labelled",
            ("logits.onnx", logits.clone()),
            vec![("labels.txt", vec![0xff, 0xfe, b'\n'])],
            &["postprocess.labels", "not UTF-8"],
        ),
        (
            "text",
            ("model.onnx", read(&format!("{MINILM}/model.onnx"))),
            vec![("tokenizer.json", b"{\"not\": \"a tokenizer\"}".to_vec())],
            &["preprocess.tokenizer", "is not a tokenizer.json"],
        ),
        (
            "text",
            ("logits.onnx", logits.clone()),
            vec![("tokenizer.json", read(&format!("{MINILM}/tokenizer.json")))],
            &["preprocess.tokenizer", "no input \"input_ids\""],
        ),
        (
            "image",
            (
                "identity.onnx",
                read(&format!("{IMAGES}/identity_nchw3.onnx")),
            ),
            vec![],
            &["preprocess.image", "[n, 3, 24, 64]", "[-1, 3, 24, 32]"],
        ),
        (
            "jieba",
            ("logits.onnx", logits.clone()),
            vec![],
            &["preprocess.segmenter", "no text input", "FP32"],
        ),
    ];
    for (model, file, assets, words) in cases {
        let before = versions_on_disk(repo.path(), model);
        let (status, body) = upload_with_assets(&server, model, file, &assets).await;
        assert_eq!(status, 400, "{model}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains("config.toml"), "{model}: {msg}");
        for w in words {
            assert!(msg.contains(w), "{model}: {w:?} not in {msg}");
        }
        assert!(!msg.contains(repo.path().to_str().unwrap()), "{msg}");
        assert_eq!(versions_on_disk(repo.path(), model), before, "{model}");
    }
    // Nothing staged is left behind, and the stored version still serves with its
    // own labels.
    let leftovers: Vec<_> = std::fs::read_dir(repo.path().join("labelled"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(std::fs::read(stored.join("labels.txt")).unwrap(), labels);
    let (status, answer) = server
        .post_json(
            "/predict",
            &json!({"model_id": "labelled", "features": row}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 1);
    let (_, status_body) = server.get("/v1/models/labelled").await;
    let states: Vec<&Value> = status_body["model_version_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["state"])
        .collect();
    assert_eq!(states, [&json!("AVAILABLE")], "{status_body}");

    // Asset names the version directory cannot hold: a file the repository
    // would load instead of the model, a warm-up that fails (both once stored
    // with a 200, the version in ERROR).
    for (name, words) in [
        ("config.toml", "config.toml"),
        (".hidden", "does not start with '.'"),
        ("labels.txt", "name of another file"),
        ("saved_model.pb", "would be taken for the version's model"),
        ("warmup.json", "warm-up failed: warmup.json"),
        // It marks a model training may replace.
        ("training.json", "only a training job writes it"),
    ] {
        let mut assets = vec![(name, b"x\n".to_vec())];
        if name == "labels.txt" || name == "warmup.json" {
            assets.push(("labels.txt", labels.clone()));
        }
        let (status, body) = upload_with_assets(
            &server,
            "labelled",
            ("logits.onnx", logits.clone()),
            &assets,
        )
        .await;
        assert_eq!(status, 400, "{name}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(words),
            "{name}: {body}"
        );
    }
    assert_eq!(versions_on_disk(repo.path(), "labelled"), [1]);

    // The model's config.toml broken meanwhile: an upload is checked against
    // nothing, so it is refused (409) and nothing stored (it was checked against
    // the defaults and stored without its labels: a version that failed once the
    // file was fixed).
    let config = repo.path().join("labelled/config.toml");
    let good = std::fs::read(&config).unwrap();
    std::fs::write(&config, "[postprocess\nlabels = \"labels.txt\"\n").unwrap();
    let (status, body) =
        upload_with_assets(&server, "labelled", ("logits.onnx", logits.clone()), &[]).await;
    assert_eq!(status, 409, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("config.toml is not a valid model config"),
        "{msg}"
    );
    assert!(!msg.contains(repo.path().to_str().unwrap()), "{msg}");
    assert_eq!(versions_on_disk(repo.path(), "labelled"), [1]);
    std::fs::write(&config, good).unwrap();
    server.stop().await;
}
