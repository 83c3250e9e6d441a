//! Black-box tests of the gRPC APIs (TF Serving PredictionService / ModelService,
//! KServe V2 GRPCInferenceService, grpc.health.v1) over a real socket with the
//! generated clients, compared with onnxruntime-Python's outputs (`expected.json`)
//! and with the REST answer for the same input.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{assert_close, install_model, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use ferroserve_proto::inference::{self as v2, InferTensorContents};
use ferroserve_proto::prost::Message;
use ferroserve_proto::tensorflow::serving::model_service_client::ModelServiceClient;
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec, SIGNATURE_DEF_MAP_TYPE_URL};
use ferroserve_proto::tensorflow::{
    self as tf, tensor_shape_proto, DataType as Dt, TensorProto, TensorShapeProto,
};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn expected(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root_path(rel)).unwrap()).unwrap()
}

/// The example models and the test fixtures; iris_lr also gets version 2 and labels.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in ["iris_lr", "iris_dt"] {
        install_model(
            dir.path(),
            m,
            1,
            &root_path(&format!("examples/models/{m}/1/model.onnx")),
        );
    }
    install_model(
        dir.path(),
        "iris_lr",
        2,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    std::fs::write(
        dir.path().join("iris_lr/config.toml"),
        "version_policy = \"all\"\nfeature_names = [\"sl\", \"sw\", \"pl\", \"pw\"]\n[labels]\nstable = 1\ncanary = 2\n",
    )
    .unwrap();
    for m in ["iris_str", "diabetes_f64", "multi_io"] {
        install_model(
            dir.path(),
            m,
            1,
            &root_path(&format!("tests/fixtures/onnx/{m}/model.onnx")),
        );
    }
    dir
}

fn expected_rows(exp: &Value) -> Vec<Vec<f32>> {
    exp["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
    Some(TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| tensor_shape_proto::Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    })
}

fn float_tensor(rows: &[Vec<f32>]) -> TensorProto {
    TensorProto {
        dtype: Dt::DtFloat as i32,
        tensor_shape: shape(&[rows.len() as i64, rows[0].len() as i64]),
        float_val: rows.concat(),
        ..Default::default()
    }
}

fn spec(name: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: name.into(),
        ..Default::default()
    })
}

fn predict_request(spec: Option<ModelSpec>, input: TensorProto) -> tfs::PredictRequest {
    tfs::PredictRequest {
        model_spec: spec,
        inputs: HashMap::from([("input".to_string(), input)]),
        output_filter: vec![],
    }
}

fn v2_input(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: InferTensorContents,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: HashMap::new(),
        contents: Some(contents),
    }
}

fn infer_request(model: &str, inputs: Vec<InferInputTensor>) -> v2::ModelInferRequest {
    v2::ModelInferRequest {
        model_name: model.into(),
        inputs,
        ..Default::default()
    }
}

fn f32_contents(rows: &[Vec<f32>]) -> InferTensorContents {
    InferTensorContents {
        fp32_contents: rows.concat(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_predict_by_version_and_label_matches_onnxruntime_and_rest() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut client = PredictionServiceClient::new(server.grpc_channel().await);
    let exp = expected("examples/models/iris_lr/1/expected.json");
    let rows = expected_rows(&exp);

    for version_spec in [
        ModelSpec {
            name: "iris_lr".into(),
            version: Some(1),
            ..Default::default()
        },
        ModelSpec {
            name: "iris_lr".into(),
            version_label: Some("stable".into()),
            ..Default::default()
        },
    ] {
        let r = client
            .predict(predict_request(
                Some(version_spec.clone()),
                float_tensor(&rows),
            ))
            .await
            .unwrap()
            .into_inner();
        let answered = r.model_spec.unwrap();
        assert_eq!(
            (answered.name.as_str(), answered.version),
            ("iris_lr", Some(1))
        );
        assert_eq!(answered.signature_name, "serving_default");
        let label = &r.outputs["label"];
        assert_eq!(label.dtype, Dt::DtInt64 as i32);
        let want: Vec<i64> = exp["onnxruntime"]["label"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(label.int64_val, want, "{version_spec:?}");
        let probs = &r.outputs["probabilities"];
        assert_eq!(probs.tensor_shape, shape(&[rows.len() as i64, 3]));
        let want: Vec<f64> = exp["onnxruntime"]["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        for (a, b) in probs.float_val.iter().zip(&want) {
            assert_close(*a as f64, *b, 1e-6, "probability");
        }
    }

    // The label "canary" is version 2 (the decision tree), as the latest is.
    let canary = client
        .predict(predict_request(
            Some(ModelSpec {
                name: "iris_lr".into(),
                version_label: Some("canary".into()),
                ..Default::default()
            }),
            float_tensor(&rows[..1]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(canary.model_spec.unwrap().version, Some(2));

    // The same input over REST gives the same answer, and tensor_content input too.
    let mut request = predict_request(spec("iris_lr"), float_tensor(&rows[..2]));
    request.output_filter = vec!["probabilities".into()];
    let grpc = client.predict(request).await.unwrap().into_inner();
    assert_eq!(
        grpc.outputs.keys().collect::<Vec<_>>(),
        vec!["probabilities"]
    );
    let (status, rest) = server
        .post_json(
            "/v1/models/iris_lr:predict",
            &json!({"inputs": {"input": [rows[0], rows[1]]}}),
        )
        .await;
    assert_eq!(status, 200, "{rest}");
    let rest_probs: Vec<f32> = rest["outputs"]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    assert_eq!(grpc.outputs["probabilities"].float_val, rest_probs);
    let content = TensorProto {
        dtype: Dt::DtFloat as i32,
        tensor_shape: shape(&[2, 4]),
        tensor_content: rows[..2]
            .concat()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        ..Default::default()
    };
    let mut request = predict_request(spec("iris_lr"), content);
    request.output_filter = vec!["probabilities".into()];
    let from_content = client.predict(request).await.unwrap().into_inner();
    assert_eq!(from_content.outputs["probabilities"].float_val, rest_probs);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_predict_refuses_bad_requests() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut client = PredictionServiceClient::new(server.grpc_channel().await);
    let row = vec![vec![5.1f32, 3.5, 1.4, 0.2]];
    let with_spec = |s: ModelSpec| predict_request(Some(s), float_tensor(&row));
    let iris = |f: fn(&mut ModelSpec)| {
        let mut s = ModelSpec {
            name: "iris_lr".into(),
            ..Default::default()
        };
        f(&mut s);
        s
    };
    let strings = TensorProto {
        dtype: Dt::DtString as i32,
        tensor_shape: shape(&[1, 4]),
        string_val: vec![b"a".to_vec(); 4],
        ..Default::default()
    };
    let cases: Vec<(&str, tfs::PredictRequest, Code, &str)> = vec![
        (
            "unknown model",
            with_spec(ModelSpec {
                name: "nope".into(),
                ..Default::default()
            }),
            Code::NotFound,
            "nope",
        ),
        (
            "no model_spec",
            predict_request(None, float_tensor(&row)),
            Code::InvalidArgument,
            "model_spec",
        ),
        (
            "unknown version",
            with_spec(iris(|s| s.version = Some(9))),
            Code::NotFound,
            "version 9",
        ),
        (
            "negative version",
            with_spec(iris(|s| s.version = Some(-1))),
            Code::InvalidArgument,
            "negative",
        ),
        (
            "unknown label",
            with_spec(iris(|s| s.version_label = Some("x".into()))),
            Code::NotFound,
            "label",
        ),
        (
            "version and label at once",
            with_spec(iris(|s| {
                s.version = Some(1);
                s.version_label = Some("stable".into());
            })),
            Code::InvalidArgument,
            "both version",
        ),
        (
            "unknown signature",
            with_spec(iris(|s| s.signature_name = "other".into())),
            Code::InvalidArgument,
            "signature",
        ),
        (
            "wrong dtype",
            predict_request(spec("iris_lr"), strings),
            Code::InvalidArgument,
            "must be FP32",
        ),
        (
            "shape mismatch",
            predict_request(spec("iris_lr"), float_tensor(&[vec![1.0, 2.0, 3.0]])),
            Code::InvalidArgument,
            "shape [1, 3]",
        ),
        (
            "empty tensor",
            predict_request(
                spec("iris_lr"),
                TensorProto {
                    dtype: Dt::DtFloat as i32,
                    tensor_shape: shape(&[0, 4]),
                    ..Default::default()
                },
            ),
            Code::InvalidArgument,
            "empty",
        ),
        (
            "values missing",
            predict_request(
                spec("iris_lr"),
                TensorProto {
                    dtype: Dt::DtFloat as i32,
                    tensor_shape: shape(&[1, 4]),
                    ..Default::default()
                },
            ),
            Code::InvalidArgument,
            "no values",
        ),
        (
            "unsupported dtype",
            predict_request(
                spec("iris_lr"),
                TensorProto {
                    dtype: Dt::DtComplex64 as i32,
                    tensor_shape: shape(&[1]),
                    scomplex_val: vec![1.0, 0.0],
                    ..Default::default()
                },
            ),
            Code::InvalidArgument,
            "DT_COMPLEX64",
        ),
        (
            "unknown output",
            tfs::PredictRequest {
                output_filter: vec!["nope".into()],
                ..predict_request(spec("iris_lr"), float_tensor(&row))
            },
            Code::InvalidArgument,
            "no output",
        ),
        (
            "unknown input",
            tfs::PredictRequest {
                inputs: HashMap::from([("x".to_string(), float_tensor(&row))]),
                ..predict_request(spec("iris_lr"), float_tensor(&row))
            },
            Code::InvalidArgument,
            "no input",
        ),
    ];
    for (what, request, code, message) in cases {
        let status = client.predict(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(message),
            "{what}: {:?}",
            status.message()
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_metadata_status_classify_regress() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut client = PredictionServiceClient::new(server.grpc_channel().await);
    let mut models = ModelServiceClient::new(server.grpc_channel().await);

    // Metadata: a SignatureDefMap in an Any, as TF Serving packs it.
    let meta = client
        .get_model_metadata(tfs::GetModelMetadataRequest {
            model_spec: Some(ModelSpec {
                name: "iris_lr".into(),
                version: Some(1),
                ..Default::default()
            }),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let any = &meta.metadata["signature_def"];
    assert_eq!(any.type_url, SIGNATURE_DEF_MAP_TYPE_URL);
    let map = tfs::SignatureDefMap::decode(any.value.as_slice()).unwrap();
    let sig = &map.signature_def["serving_default"];
    assert_eq!(sig.method_name, "tensorflow/serving/predict");
    let input = &sig.inputs["input"];
    assert_eq!(input.dtype, Dt::DtFloat as i32);
    assert_eq!(input.tensor_shape, shape(&[-1, 4]));
    assert_eq!(sig.outputs["label"].dtype, Dt::DtInt64 as i32);
    for (fields, code) in [
        (vec![], Code::InvalidArgument),
        (vec!["other".to_string()], Code::InvalidArgument),
    ] {
        let status = client
            .get_model_metadata(tfs::GetModelMetadataRequest {
                model_spec: spec("iris_lr"),
                metadata_field: fields,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), code);
    }
    let status = client
        .get_model_metadata(tfs::GetModelMetadataRequest {
            model_spec: spec("nope"),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // Status: every version, one version, a label, an unknown model.
    let all = models
        .get_model_status(tfs::GetModelStatusRequest {
            model_spec: spec("iris_lr"),
        })
        .await
        .unwrap()
        .into_inner();
    let states: Vec<(i64, i32)> = all
        .model_version_status
        .iter()
        .map(|s| (s.version, s.state))
        .collect();
    let available = tfs::model_version_status::State::Available as i32;
    assert_eq!(states, vec![(2, available), (1, available)]);
    assert_eq!(
        all.model_version_status[0]
            .status
            .as_ref()
            .unwrap()
            .error_code,
        tf::error::Code::Ok as i32
    );
    let one = models
        .get_model_status(tfs::GetModelStatusRequest {
            model_spec: Some(ModelSpec {
                name: "iris_lr".into(),
                version_label: Some("stable".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.model_version_status.len(), 1);
    assert_eq!(one.model_version_status[0].version, 1);
    let status = models
        .get_model_status(tfs::GetModelStatusRequest {
            model_spec: spec("nope"),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // Classify: features by the names in iris_lr's config, scores = probabilities.
    let exp = expected("examples/models/iris_lr/1/expected.json");
    let rows = expected_rows(&exp);
    let example = |row: &[f32]| tf::Example {
        features: Some(tf::Features {
            feature: ["sl", "sw", "pl", "pw"]
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
    let input = |rows: &[Vec<f32>]| {
        Some(tfs::Input {
            kind: Some(tfs::input::Kind::ExampleList(tfs::ExampleList {
                examples: rows.iter().map(|r| example(r)).collect(),
            })),
        })
    };
    let stable = Some(ModelSpec {
        name: "iris_lr".into(),
        version: Some(1),
        ..Default::default()
    });
    let classified = client
        .classify(tfs::ClassificationRequest {
            model_spec: stable.clone(),
            input: input(&rows[..3]),
        })
        .await
        .unwrap()
        .into_inner();
    let result = classified.result.unwrap();
    assert_eq!(result.classifications.len(), 3);
    for (i, c) in result.classifications.iter().enumerate() {
        let labels: Vec<&str> = c.classes.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, vec!["0", "1", "2"]);
        for (j, class) in c.classes.iter().enumerate() {
            let want = exp["onnxruntime"]["probabilities"][i][j].as_f64().unwrap();
            assert_close(class.score as f64, want, 1e-6, "class score");
        }
    }
    // A missing feature and an empty example list are refused.
    let mut partial = example(&rows[0]);
    partial.features.as_mut().unwrap().feature.remove("pw");
    let status = client
        .classify(tfs::ClassificationRequest {
            model_spec: stable.clone(),
            input: Some(tfs::Input {
                kind: Some(tfs::input::Kind::ExampleList(tfs::ExampleList {
                    examples: vec![partial],
                })),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("\"pw\""), "{}", status.message());
    let status = client
        .classify(tfs::ClassificationRequest {
            model_spec: stable.clone(),
            input: input(&[]),
        })
        .await;
    assert_eq!(status.unwrap_err().code(), Code::InvalidArgument);

    // Regress: diabetes has no feature names, so each example holds the whole row.
    let dexp = expected("tests/fixtures/onnx/diabetes_f64/expected.json");
    let drows: Vec<Vec<f32>> = expected_rows(&dexp).into_iter().take(3).collect();
    let regressed = client
        .regress(tfs::RegressionRequest {
            model_spec: spec("diabetes_f64"),
            input: Some(tfs::Input {
                kind: Some(tfs::input::Kind::ExampleList(tfs::ExampleList {
                    examples: drows
                        .iter()
                        .map(|r| tf::Example {
                            features: Some(tf::Features {
                                feature: HashMap::from([(
                                    "input".to_string(),
                                    tf::Feature {
                                        kind: Some(tf::feature::Kind::FloatList(tf::FloatList {
                                            value: r.clone(),
                                        })),
                                    },
                                )]),
                            }),
                        })
                        .collect(),
                })),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let values: Vec<f32> = regressed
        .result
        .unwrap()
        .regressions
        .iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(values.len(), 3);
    for (i, v) in values.iter().enumerate() {
        // f32 features, so agree with the f64 reference to about 1e-5.
        assert_close(
            *v as f64,
            dexp["onnxruntime"]["variable"][i][0].as_f64().unwrap(),
            1e-4,
            "regression",
        );
    }

    // MultiInference: a classify task; a regress task beside it on a classifier is
    // refused, as TF Serving refuses a method its signature is not for.
    let task = |spec: &Option<ModelSpec>, signature: &str, method: &str| {
        let mut spec = spec.clone();
        if let Some(s) = spec.as_mut() {
            s.signature_name = signature.into();
        }
        tfs::InferenceTask {
            model_spec: spec,
            method_name: format!("tensorflow/serving/{method}"),
        }
    };
    let multi = client
        .multi_inference(tfs::MultiInferenceRequest {
            tasks: vec![task(&stable, "", "classify")],
            input: input(&rows[..2]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(multi.results.len(), 1);
    for result in &multi.results {
        match &result.result {
            Some(tfs::inference_result::Result::ClassificationResult(c)) => {
                assert_eq!(c.classifications.len(), 2);
                let best = &c.classifications[0].classes[0];
                assert_eq!(best.label, "0", "two setosa rows: {c:?}");
            }
            other => panic!("expected a classification result, got {other:?}"),
        }
    }
    let status = client
        .multi_inference(tfs::MultiInferenceRequest {
            tasks: vec![
                task(&stable, "", "classify"),
                task(&stable, "regression", "regress"),
            ],
            input: input(&rows[..2]),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("classifier"),
        "{}",
        status.message()
    );

    // As TF Serving (multi_inference.cc): one version, the first task's, runs every
    // task and stamps every result (the second task's version is not read), and
    // two tasks of one method are fine under different signature names (the
    // default and its Estimator name here).
    let canary = Some(ModelSpec {
        name: "iris_lr".into(),
        version: Some(2),
        ..Default::default()
    });
    let multi = client
        .multi_inference(tfs::MultiInferenceRequest {
            tasks: vec![
                task(&stable, "", "classify"),
                task(&canary, "classification", "classify"),
            ],
            input: input(&rows[..2]),
        })
        .await
        .unwrap()
        .into_inner();
    let stamps: Vec<(i64, &str)> = multi
        .results
        .iter()
        .map(|r| {
            let spec = r.model_spec.as_ref().unwrap();
            (spec.version.unwrap(), spec.signature_name.as_str())
        })
        .collect();
    assert_eq!(stamps, [(1, "serving_default"), (1, "classification")]);
    assert_eq!(multi.results[0].result, multi.results[1].result);

    // TF Serving's refusals, with its codes and words.
    let other_model = Some(ModelSpec {
        name: "iris_dt".into(),
        ..Default::default()
    });
    let no_name = Some(ModelSpec::default());
    for (tasks, code, words) in [
        (
            vec![
                task(&stable, "", "classify"),
                task(&stable, "serving_default", "regress"),
            ],
            Code::InvalidArgument,
            "Duplicate evaluation of signature: serving_default",
        ),
        (
            vec![
                task(&stable, "", "classify"),
                task(&other_model, "x", "classify"),
            ],
            Code::InvalidArgument,
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            vec![
                task(&stable, "", "classify"),
                task(&no_name, "x", "classify"),
            ],
            Code::InvalidArgument,
            "Found ModelSpec with an empty model name.",
        ),
        (
            vec![tfs::InferenceTask {
                model_spec: stable.clone(),
                method_name: "predict".into(),
            }],
            Code::Unimplemented,
            "Unsupported signature method_name: predict",
        ),
        (
            vec![task(&stable, "", "predict")],
            Code::Unimplemented,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
    ] {
        let status = client
            .multi_inference(tfs::MultiInferenceRequest {
                tasks,
                input: input(&rows[..1]),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().starts_with(words), "{status:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v2_health_metadata_and_infer_match_rest() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut client = GrpcInferenceServiceClient::new(server.grpc_channel().await);

    assert!(
        client
            .server_live(v2::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(v2::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let ready = |name: &str, version: &str| v2::ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        client
            .model_ready(ready("iris_lr", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        client
            .model_ready(ready("iris_lr", "2"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    // As REST reads /versions/02: version 2 (it was INVALID_ARGUMENT here).
    assert!(
        client
            .model_ready(ready("iris_lr", "02"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !client
            .model_ready(ready("iris_lr", "7"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !client
            .model_ready(ready("nope", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let meta = client
        .server_metadata(v2::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "ferroserve");
    assert!(meta.extensions.contains(&"model_repository".to_string()));

    let meta = client
        .model_metadata(v2::ModelMetadataRequest {
            name: "iris_lr".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.versions, vec!["1", "2"]);
    assert_eq!(meta.platform, "onnxruntime_onnx");
    assert_eq!(
        (
            meta.inputs[0].name.as_str(),
            meta.inputs[0].datatype.as_str()
        ),
        ("input", "FP32")
    );
    assert_eq!(meta.inputs[0].shape, vec![-1, 4]);

    // Typed contents: INT64 labels and FP32 probabilities, equal to REST's answer.
    let exp = expected("examples/models/iris_lr/1/expected.json");
    let rows = expected_rows(&exp);
    let mut request = infer_request(
        "iris_lr",
        vec![v2_input("input", "FP32", &[2, 4], f32_contents(&rows[..2]))],
    );
    request.model_version = "1".into();
    request.id = "req-42".into();
    let typed = client
        .model_infer(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (typed.id.as_str(), typed.model_version.as_str()),
        ("req-42", "1")
    );
    assert!(typed.raw_output_contents.is_empty());
    let label = typed.outputs.iter().find(|o| o.name == "label").unwrap();
    assert_eq!(
        (label.datatype.as_str(), label.shape.as_slice()),
        ("INT64", &[2i64][..])
    );
    assert_eq!(label.contents.as_ref().unwrap().int64_contents, vec![0, 0]);
    let (status, rest) = server
        .post_json(
            "/v2/models/iris_lr/versions/1/infer",
            &json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": rows[..2].concat()}]}),
        )
        .await;
    assert_eq!(status, 200, "{rest}");
    let rest_probs: Vec<f32> = rest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let probs = typed
        .outputs
        .iter()
        .find(|o| o.name == "probabilities")
        .unwrap();
    assert_eq!(probs.contents.as_ref().unwrap().fp32_contents, rest_probs);

    // Raw contents in, raw contents out; output selection.
    let mut raw = infer_request(
        "iris_lr",
        vec![InferInputTensor {
            contents: None,
            ..v2_input("input", "FP32", &[2, 4], Default::default())
        }],
    );
    raw.model_version = "1".into();
    raw.raw_input_contents = vec![rows[..2]
        .concat()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect()];
    raw.outputs = vec![InferRequestedOutputTensor {
        name: "probabilities".into(),
        parameters: HashMap::new(),
    }];
    let r = client.model_infer(raw).await.unwrap().into_inner();
    assert_eq!(r.outputs.len(), 1);
    assert!(r.outputs[0].contents.is_none());
    let got: Vec<f32> = r.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, rest_probs);

    // BYTES output: iris_str's labels, typed and raw (4-byte length prefixes).
    let sexp = expected("tests/fixtures/onnx/iris_str/expected.json");
    let srows = expected_rows(&sexp);
    let request = infer_request(
        "iris_str",
        vec![v2_input(
            "input",
            "FP32",
            &[3, 4],
            f32_contents(&srows[..3]),
        )],
    );
    let r = client.model_infer(request).await.unwrap().into_inner();
    let label = r.outputs.iter().find(|o| o.datatype == "BYTES").unwrap();
    let want: Vec<Vec<u8>> = sexp["onnxruntime"]["label"].as_array().unwrap()[..3]
        .iter()
        .map(|v| v.as_str().unwrap().as_bytes().to_vec())
        .collect();
    assert_eq!(label.contents.as_ref().unwrap().bytes_contents, want);

    // Every dtype multi_io takes and gives, typed and raw, as onnxruntime gave them.
    let mexp = expected("tests/fixtures/onnx/multi_io/expected.json");
    let inputs = &mexp["inputs"];
    let i64s = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let typed_inputs = vec![
        v2_input(
            "f32",
            "FP32",
            &[2, 2],
            InferTensorContents {
                fp32_contents: inputs["f32"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| {
                        r.as_array()
                            .unwrap()
                            .iter()
                            .map(|x| x.as_f64().unwrap() as f32)
                    })
                    .collect(),
                ..Default::default()
            },
        ),
        v2_input(
            "f64",
            "FP64",
            &[2],
            InferTensorContents {
                fp64_contents: inputs["f64"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect(),
                ..Default::default()
            },
        ),
        v2_input(
            "i32",
            "INT32",
            &[2],
            InferTensorContents {
                int_contents: i64s(&inputs["i32"]).iter().map(|&x| x as i32).collect(),
                ..Default::default()
            },
        ),
        v2_input(
            "i64",
            "INT64",
            &[2],
            InferTensorContents {
                int64_contents: i64s(&inputs["i64"]),
                ..Default::default()
            },
        ),
        v2_input(
            "flag",
            "BOOL",
            &[2],
            InferTensorContents {
                bool_contents: inputs["flag"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_bool().unwrap())
                    .collect(),
                ..Default::default()
            },
        ),
        v2_input(
            "text",
            "BYTES",
            &[2],
            InferTensorContents {
                bytes_contents: inputs["text"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().as_bytes().to_vec())
                    .collect(),
                ..Default::default()
            },
        ),
    ];
    let r = client
        .model_infer(infer_request("multi_io", typed_inputs.clone()))
        .await
        .unwrap()
        .into_inner();
    let out = |name: &str| {
        r.outputs
            .iter()
            .find(|o| o.name == name)
            .unwrap()
            .contents
            .clone()
            .unwrap()
    };
    let want = &mexp["onnxruntime"];
    assert_eq!(out("i64_neg").int64_contents, i64s(&want["i64_neg"]));
    assert_eq!(
        out("i32_abs").int_contents,
        i64s(&want["i32_abs"])
            .iter()
            .map(|&x| x as i32)
            .collect::<Vec<_>>()
    );
    assert_eq!(out("flag_not").bool_contents, vec![false, true]);
    assert_eq!(
        out("text_out").bytes_contents,
        vec!["setosa".as_bytes().to_vec(), "über".as_bytes().to_vec()]
    );
    assert_eq!(out("f64_neg").fp64_contents, vec![-0.1, 2.5]);
    assert_eq!(out("f32_sum").fp32_contents, vec![3.5, -0.75]);
    // The same tensors raw give the same answer, raw.
    let mut raw = infer_request("multi_io", vec![]);
    for input in typed_inputs {
        let c = input.contents.clone().unwrap();
        let bytes: Vec<u8> = match input.datatype.as_str() {
            "FP32" => c
                .fp32_contents
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            "FP64" => c
                .fp64_contents
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            "INT32" => c
                .int_contents
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            "INT64" => c
                .int64_contents
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            "BOOL" => c.bool_contents.iter().map(|&b| b as u8).collect(),
            _ => c
                .bytes_contents
                .iter()
                .flat_map(|b| [(b.len() as u32).to_le_bytes().to_vec(), b.clone()].concat())
                .collect(),
        };
        raw.raw_input_contents.push(bytes.into());
        raw.inputs.push(InferInputTensor {
            contents: None,
            ..input
        });
    }
    let r = client.model_infer(raw).await.unwrap().into_inner();
    let i = r.outputs.iter().position(|o| o.name == "text_out").unwrap();
    assert_eq!(
        r.raw_output_contents[i],
        [
            &6u32.to_le_bytes()[..],
            b"setosa",
            &5u32.to_le_bytes()[..],
            "über".as_bytes()
        ]
        .concat()
    );
    let i = r.outputs.iter().position(|o| o.name == "i64_neg").unwrap();
    assert_eq!(
        r.raw_output_contents[i],
        i64s(&want["i64_neg"])
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v2_infer_refuses_bad_requests() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let row = vec![vec![5.1f32, 3.5, 1.4, 0.2]];
    let good = || v2_input("input", "FP32", &[1, 4], f32_contents(&row));
    let with = |f: fn(&mut v2::ModelInferRequest)| {
        let mut r = infer_request("iris_lr", vec![good()]);
        f(&mut r);
        r
    };
    let cases: Vec<(&str, v2::ModelInferRequest, Code, &str)> = vec![
        (
            "unknown model",
            with(|r| r.model_name = "nope".into()),
            Code::NotFound,
            "nope",
        ),
        (
            "unknown version",
            with(|r| r.model_version = "9".into()),
            Code::NotFound,
            "version 9",
        ),
        (
            "bad version",
            with(|r| r.model_version = "v1".into()),
            Code::InvalidArgument,
            "not a model version",
        ),
        (
            "wrong dtype",
            with(|r| r.inputs[0].datatype = "BYTES".into()),
            Code::InvalidArgument,
            "input \"input\"",
        ),
        (
            "unknown datatype",
            with(|r| r.inputs[0].datatype = "FLOAT".into()),
            Code::InvalidArgument,
            "unknown datatype",
        ),
        (
            "shared memory",
            with(|r| {
                r.inputs[0].parameters.insert(
                    "shared_memory_region".into(),
                    v2::InferParameter {
                        parameter_choice: Some(v2::infer_parameter::ParameterChoice::StringParam(
                            "r".into(),
                        )),
                    },
                );
            }),
            Code::InvalidArgument,
            "shared-memory extension is not supported",
        ),
        (
            "shape mismatch",
            with(|r| r.inputs[0].shape = vec![2, 4]),
            Code::InvalidArgument,
            "8 elements but 4",
        ),
        (
            "wrong shape for the model",
            with(|r| r.inputs[0].shape = vec![2, 2]),
            Code::InvalidArgument,
            "shape [2, 2]",
        ),
        (
            "negative dimension",
            with(|r| r.inputs[0].shape = vec![-1, 4]),
            Code::InvalidArgument,
            "negative",
        ),
        (
            "empty tensor",
            with(|r| {
                r.inputs[0].shape = vec![0, 4];
                r.inputs[0].contents = Some(Default::default());
            }),
            Code::InvalidArgument,
            "empty",
        ),
        (
            "raw count",
            with(|r| r.raw_input_contents = vec![Default::default(), Default::default()]),
            Code::InvalidArgument,
            "raw_input_contents",
        ),
        (
            "raw too short",
            with(|r| {
                r.inputs[0].contents = None;
                r.raw_input_contents = vec![vec![0u8; 15].into()];
            }),
            Code::InvalidArgument,
            "15 bytes",
        ),
        (
            "FP16 typed",
            with(|r| r.inputs[0].datatype = "FP16".into()),
            Code::InvalidArgument,
            "FP16",
        ),
        (
            "unknown output",
            with(|r| {
                r.outputs = vec![InferRequestedOutputTensor {
                    name: "x".into(),
                    parameters: HashMap::new(),
                }]
            }),
            Code::InvalidArgument,
            "no output",
        ),
        (
            "bad timeout parameter",
            with(|r| {
                r.parameters.insert(
                    "timeout".into(),
                    v2::InferParameter {
                        parameter_choice: Some(v2::infer_parameter::ParameterChoice::StringParam(
                            "1s".into(),
                        )),
                    },
                );
            }),
            Code::InvalidArgument,
            "timeout",
        ),
    ];
    for (what, request, code, message) in cases {
        let status = client.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(message),
            "{what}: {:?}",
            status.message()
        );
    }
    let status = client
        .model_metadata(v2::ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    server.stop().await;
}

/// A 0-d scalar is no row of a `[-1]` input, on any protocol (TensorFlow, TF
/// Serving and Triton refuse a tensor of rank 0 for an input of rank 1): 400 /
/// INVALID_ARGUMENT naming the input and both shapes. The same value as one row
/// (`[1]`) is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scalar_is_not_one_row_of_a_vector_input_on_any_protocol() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let words = |message: &str| {
        message.contains("\"f64\"") && message.contains("shape []") && message.contains("[-1]")
    };
    // multi_io's inputs, one row each; `f64` (`[-1]`) with the shape given.
    let v2_rest = |f64_shape: Value| {
        json!({"inputs": [
            {"name": "f32", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2.0]},
            {"name": "f64", "shape": f64_shape, "datatype": "FP64", "data": [0.5]},
            {"name": "i32", "shape": [1], "datatype": "INT32", "data": [3]},
            {"name": "i64", "shape": [1], "datatype": "INT64", "data": [4]},
            {"name": "flag", "shape": [1], "datatype": "BOOL", "data": [true]},
            {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["dog"]},
        ]})
    };
    let (status, body) = server
        .post_json("/v2/models/multi_io/infer", &v2_rest(json!([1])))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post_json("/v2/models/multi_io/infer", &v2_rest(json!([])))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(words(body["error"].as_str().unwrap()), "{body}");
    // TF Serving REST, columnar: a plain number is a scalar there too.
    let (status, body) = server
        .post_json(
            "/v1/models/multi_io:predict",
            &json!({"inputs": {"f32": [[1.5, 2.0]], "f64": 0.5, "i32": [3], "i64": [4],
                               "flag": [true], "text": ["dog"]}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(words(body["error"].as_str().unwrap()), "{body}");

    // V2 gRPC, typed and raw.
    let mut v2_client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let typed = |f64_shape: &[i64]| {
        let contents = |f: fn(&mut InferTensorContents)| {
            let mut c = InferTensorContents::default();
            f(&mut c);
            c
        };
        vec![
            v2_input(
                "f32",
                "FP32",
                &[1, 2],
                contents(|c| c.fp32_contents = vec![1.5, 2.0]),
            ),
            v2_input(
                "f64",
                "FP64",
                f64_shape,
                contents(|c| c.fp64_contents = vec![0.5]),
            ),
            v2_input("i32", "INT32", &[1], contents(|c| c.int_contents = vec![3])),
            v2_input(
                "i64",
                "INT64",
                &[1],
                contents(|c| c.int64_contents = vec![4]),
            ),
            v2_input(
                "flag",
                "BOOL",
                &[1],
                contents(|c| c.bool_contents = vec![true]),
            ),
            v2_input(
                "text",
                "BYTES",
                &[1],
                contents(|c| c.bytes_contents = vec![b"dog".to_vec()]),
            ),
        ]
    };
    v2_client
        .model_infer(infer_request("multi_io", typed(&[1])))
        .await
        .unwrap();
    let status = v2_client
        .model_infer(infer_request("multi_io", typed(&[])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(words(status.message()), "{status:?}");
    let mut raw = infer_request("multi_io", typed(&[]));
    for input in &mut raw.inputs {
        input.contents = None;
    }
    let raw_contents: [Vec<u8>; 6] = [
        [1.5f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect(),
        0.5f64.to_le_bytes().to_vec(),
        3i32.to_le_bytes().to_vec(),
        4i64.to_le_bytes().to_vec(),
        vec![1],
        [3u32.to_le_bytes().as_slice(), b"dog"].concat(),
    ];
    raw.raw_input_contents = raw_contents.into_iter().map(Into::into).collect();
    let status = v2_client.model_infer(raw).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(words(status.message()), "{status:?}");

    // TF Serving Predict.
    let mut tf_client = PredictionServiceClient::new(server.grpc_channel().await);
    let tensor = |dtype: Dt, dims: &[i64], fill: fn(&mut TensorProto)| {
        let mut t = TensorProto {
            dtype: dtype as i32,
            tensor_shape: shape(dims),
            ..Default::default()
        };
        fill(&mut t);
        t
    };
    let request = |f64_dims: &[i64]| tfs::PredictRequest {
        model_spec: spec("multi_io"),
        inputs: HashMap::from([
            (
                "f32".to_string(),
                tensor(Dt::DtFloat, &[1, 2], |t| t.float_val = vec![1.5, 2.0]),
            ),
            (
                "f64".to_string(),
                tensor(Dt::DtDouble, f64_dims, |t| t.double_val = vec![0.5]),
            ),
            (
                "i32".to_string(),
                tensor(Dt::DtInt32, &[1], |t| t.int_val = vec![3]),
            ),
            (
                "i64".to_string(),
                tensor(Dt::DtInt64, &[1], |t| t.int64_val = vec![4]),
            ),
            (
                "flag".to_string(),
                tensor(Dt::DtBool, &[1], |t| t.bool_val = vec![true]),
            ),
            (
                "text".to_string(),
                tensor(Dt::DtString, &[1], |t| t.string_val = vec![b"dog".to_vec()]),
            ),
        ]),
        output_filter: vec![],
    };
    tf_client.predict(request(&[1])).await.unwrap();
    let status = tf_client.predict(request(&[])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(words(status.message()), "{status:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v2_repository_index_load_unload() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let index = |ready| v2::RepositoryIndexRequest {
        repository_name: String::new(),
        ready,
    };
    let names = |r: &v2::RepositoryIndexResponse| {
        r.models
            .iter()
            .map(|m| format!("{}/{}/{}", m.name, m.version, m.state))
            .collect::<Vec<_>>()
    };
    let all = client
        .repository_index(index(false))
        .await
        .unwrap()
        .into_inner();
    assert!(
        names(&all).contains(&"iris_lr/2/AVAILABLE".to_string()),
        "{:?}",
        names(&all)
    );

    let unload = |name: &str| v2::RepositoryModelUnloadRequest {
        repository_name: String::new(),
        model_name: name.into(),
        parameters: HashMap::new(),
    };
    let load = |name: &str| v2::RepositoryModelLoadRequest {
        repository_name: String::new(),
        model_name: name.into(),
        parameters: HashMap::new(),
    };
    client
        .repository_model_unload(unload("iris_dt"))
        .await
        .unwrap();
    let ready = client
        .repository_index(index(true))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !names(&ready).iter().any(|n| n.starts_with("iris_dt/")),
        "{:?}",
        names(&ready)
    );
    // The full index still lists the unloaded model, UNAVAILABLE with a reason.
    let all = client
        .repository_index(index(false))
        .await
        .unwrap()
        .into_inner();
    let unloaded = all
        .models
        .iter()
        .find(|m| m.name == "iris_dt" && m.state == "UNAVAILABLE")
        .unwrap_or_else(|| panic!("iris_dt not listed: {:?}", names(&all)));
    assert!(unloaded.reason.contains("unloaded"), "{unloaded:?}");
    let infer = infer_request(
        "iris_dt",
        vec![v2_input(
            "input",
            "FP32",
            &[1, 4],
            f32_contents(&[vec![5.1, 3.5, 1.4, 0.2]]),
        )],
    );
    assert_eq!(
        client.model_infer(infer.clone()).await.unwrap_err().code(),
        Code::NotFound
    );

    // A model added to the repository after start-up loads on request.
    install_model(
        repo.path(),
        "iris_new",
        1,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    client
        .repository_model_load(load("iris_new"))
        .await
        .unwrap();
    client.repository_model_load(load("iris_dt")).await.unwrap();
    assert!(client.model_infer(infer).await.is_ok());
    let ready = client
        .repository_index(index(true))
        .await
        .unwrap()
        .into_inner();
    assert!(
        names(&ready).contains(&"iris_new/1/AVAILABLE".to_string()),
        "{:?}",
        names(&ready)
    );

    for (status, code) in [
        (
            client
                .repository_model_load(load("nope"))
                .await
                .unwrap_err(),
            Code::NotFound,
        ),
        (
            client
                .repository_model_load(load("../etc"))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
        ),
        (
            client
                .repository_model_unload(unload("nope"))
                .await
                .unwrap_err(),
            Code::NotFound,
        ),
        (
            client
                .repository_index(v2::RepositoryIndexRequest {
                    repository_name: "other".into(),
                    ready: false,
                })
                .await
                .unwrap_err(),
            Code::NotFound,
        ),
    ] {
        assert_eq!(status.code(), code, "{status:?}");
    }
    server.stop().await;
}

/// The next status a health `Watch` stream sends, within 10 s (after `what`).
async fn next_status(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
    what: &str,
) -> i32 {
    tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap_or_else(|_| panic!("no Watch message after {what}"))
        .unwrap()
        .unwrap()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_server_and_models() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut health = HealthClient::new(server.grpc_channel().await);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    for service in [
        "",
        "inference.GRPCInferenceService",
        "tensorflow.serving.PredictionService",
        "iris_lr",
    ] {
        let r = health.check(check(service)).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    assert_eq!(
        health.check(check("nope")).await.unwrap_err().code(),
        Code::NotFound
    );
    let mut watch = health.watch(check("iris_lr")).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let mut unknown = health.watch(check("nope")).await.unwrap().into_inner();
    let first = unknown.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);

    // A model the server knew and unloaded is NOT_SERVING (a watcher was told of
    // it), not unknown; loaded again, it is SERVING again.
    let mut watch_dt = health.watch(check("iris_dt")).await.unwrap().into_inner();
    let first = watch_dt.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let mut repository = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    repository
        .repository_model_unload(v2::RepositoryModelUnloadRequest {
            model_name: "iris_dt".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next_status(&mut watch_dt, "the unload").await,
        ServingStatus::NotServing as i32
    );
    let r = health.check(check("iris_dt")).await.unwrap().into_inner();
    assert_eq!(r.status, ServingStatus::NotServing as i32);
    repository
        .repository_model_load(v2::RepositoryModelLoadRequest {
            model_name: "iris_dt".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next_status(&mut watch_dt, "the load").await,
        ServingStatus::Serving as i32
    );
    // An open Watch stream must not hold the server's shutdown open.
    server.stop().await;
}

/// From the stop signal, through the shutdown delay, no model is ready, as the
/// server is not: gRPC health of a model (as of the server), V2 `ModelReady` and
/// the REST model-ready routes, while requests are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_shutdown_delay_no_model_is_ready() {
    use ferroserve::server::{listen, run, Listeners};

    let repo = repo();
    let settings = Settings {
        shutdown_delay: Duration::from_secs(4),
        ..test_settings(repo.path())
    };
    let rest = listen(settings.rest_addr).unwrap();
    let grpc = listen(settings.grpc_addr).unwrap();
    let rest_url = format!("http://{}", rest.local_addr().unwrap());
    let grpc_url = format!("http://{}", grpc.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        settings,
        Listeners {
            rest,
            grpc: Some(grpc),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    let status = |path: &'static str| {
        let request = http.get(format!("{rest_url}{path}"));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while status("/v2/health/ready").await != 200 {
        assert!(std::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = Channel::from_shared(grpc_url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let mut v2_client = GrpcInferenceServiceClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let model_ready = || v2::ModelReadyRequest {
        name: "iris_lr".into(),
        version: String::new(),
    };
    let health_of = |r: tonic_health::pb::HealthCheckResponse| r.status;
    assert_eq!(
        health_of(health.check(check("iris_lr")).await.unwrap().into_inner()),
        ServingStatus::Serving as i32
    );
    assert!(
        v2_client
            .model_ready(model_ready())
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert_eq!(status("/v2/models/iris_lr/ready").await, 200);

    stop.send(()).unwrap();
    while health_of(health.check(check("")).await.unwrap().into_inner())
        != ServingStatus::NotServing as i32
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for service in ["iris_lr", "iris_dt", "inference.GRPCInferenceService"] {
        assert_eq!(
            health_of(health.check(check(service)).await.unwrap().into_inner()),
            ServingStatus::NotServing as i32,
            "{service}"
        );
    }
    assert!(
        !v2_client
            .model_ready(model_ready())
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !v2_client
            .server_ready(v2::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    for path in [
        "/v2/health/ready",
        "/v2/models/iris_lr/ready",
        "/v2/models/iris_lr/versions/1/ready",
    ] {
        assert_eq!(status(path).await, 503, "{path}");
    }
    // Still answering for the delay.
    v2_client
        .model_infer(infer_request(
            "iris_lr",
            vec![v2_input(
                "input",
                "FP32",
                &[1, 4],
                f32_contents(&[vec![5.1, 3.5, 1.4, 0.2]]),
            )],
        ))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the server did not stop after its delay")
        .unwrap()
        .unwrap();
}

/// A model the server knows that serves no version (a `specific` policy naming
/// none on disk): TF Serving's GetModelStatus answers NOT_FOUND "Could not find any
/// versions of model <name>", and its REST status 404 with the same words;
/// ferroserve's own `/models/status` lists the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_model_serving_no_version_is_not_found() {
    let repo = repo();
    install_model(
        repo.path(),
        "none_served",
        1,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    std::fs::write(
        repo.path().join("none_served/config.toml"),
        "version_policy = { specific = [7] }\n",
    )
    .unwrap();
    let server = TestServer::start(repo.path()).await;
    let mut models = ModelServiceClient::new(server.grpc_channel().await);
    let status = models
        .get_model_status(tfs::GetModelStatusRequest {
            model_spec: spec("none_served"),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("Could not find any versions of model none_served"),
        "{status:?}"
    );
    let (code, body) = server.get("/v1/models/none_served").await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("Could not find any versions of model none_served"),
        "{body}"
    );
    let (code, body) = server.get("/models/status").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.to_string().contains("none_served"), "{body}");
    // A model that serves is listed as before.
    let ok = models
        .get_model_status(tfs::GetModelStatusRequest {
            model_spec: spec("iris_dt"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.model_version_status.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_limits_are_resource_exhausted_and_deadlines_are_honoured() {
    let repo = repo();
    let mut settings = test_settings(repo.path());
    settings.grpc_max_receive_bytes = 4096;
    settings.grpc_max_send_bytes = 2048;
    let server = TestServer::start_with(settings).await;
    let mut client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let rows: Vec<Vec<f32>> = vec![vec![5.1, 3.5, 1.4, 0.2]; 200];

    // 200 rows are 3.2 kB of floats in, but about 3.4 kB of probabilities and labels out.
    let big_out = infer_request(
        "iris_lr",
        vec![v2_input("input", "FP32", &[200, 4], f32_contents(&rows))],
    );
    let status = client.model_infer(big_out).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let rows: Vec<Vec<f32>> = vec![vec![5.1, 3.5, 1.4, 0.2]; 400];
    let big_in = infer_request(
        "iris_lr",
        vec![v2_input("input", "FP32", &[400, 4], f32_contents(&rows))],
    );
    let status = client.model_infer(big_in).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // The connection survives both.
    let small = infer_request(
        "iris_lr",
        vec![v2_input("input", "FP32", &[1, 4], f32_contents(&rows[..1]))],
    );
    assert!(client.model_infer(small.clone()).await.is_ok());

    // A deadline that has passed by the time the server looks is DEADLINE_EXCEEDED from
    // the server itself. tonic's client enforces `grpc-timeout` too and would race the
    // server, so the call is sent as raw HTTP/2 with the header and no client timer.
    let mut framed = vec![0u8];
    let message = small.encode_to_vec();
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let raw = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = raw
        .post(format!(
            "http://{}/inference.GRPCInferenceService/ModelInfer",
            server.grpc_addr.unwrap()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "1n")
        .body(framed)
        .send()
        .await
        .unwrap();
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        grpc_status.as_deref(),
        Some("4"),
        "DEADLINE_EXCEEDED; headers {:?}",
        response.headers()
    );
    let mut request = tonic::Request::new(small.clone());
    request.set_timeout(Duration::from_secs(30));
    assert!(client.model_infer(request).await.is_ok());

    // A client that gzips its messages (tritonclient's compression_algorithm) is
    // answered (it was UNIMPLEMENTED); one whose message inflates past the receive
    // limit is refused as a message that large is, and the server lives on.
    let mut gzipped = GrpcInferenceServiceClient::new(server.grpc_channel().await)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let answer = gzipped
        .model_infer(small.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.model_name, "iris_lr");
    let zeros = vec![vec![0.0f32; 4]; 400];
    let bomb = infer_request(
        "iris_lr",
        vec![v2_input("input", "FP32", &[400, 4], f32_contents(&zeros))],
    );
    let status = gzipped.model_infer(bomb).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let mut deflated = GrpcInferenceServiceClient::new(server.grpc_channel().await)
        .send_compressed(tonic::codec::CompressionEncoding::Deflate);
    let answer = deflated
        .model_infer(small.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.model_name, "iris_lr");
    assert!(client.model_infer(small).await.is_ok());

    // gRPC requests show in the metrics with their protocol.
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferroserve_requests_total")
                && l.contains("protocol=\"v2_grpc\"")),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_reload_config_replaces_the_model_list() {
    let repo = repo();
    let elsewhere = tempfile::tempdir().unwrap();
    // Base paths must lie under the allowed roots: the repository and `elsewhere`.
    let server = TestServer::start_with(Settings {
        allowed_model_roots: vec![elsewhere.path().to_path_buf()],
        ..test_settings(repo.path())
    })
    .await;
    let mut models = ModelServiceClient::new(server.grpc_channel().await);
    let mut client = PredictionServiceClient::new(server.grpc_channel().await);
    install_model(
        elsewhere.path(),
        "added",
        3,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    let config = |name: &str, base_path: &str| tfs::ModelConfig {
        name: name.into(),
        base_path: base_path.into(),
        model_platform: "onnx".into(),
        ..Default::default()
    };
    let reload = |configs: Vec<tfs::ModelConfig>| tfs::ReloadConfigRequest {
        config: Some(tfs::ModelServerConfig {
            config: Some(tfs::model_server_config::Config::ModelConfigList(
                tfs::ModelConfigList { config: configs },
            )),
        }),
    };
    let added_dir = elsewhere.path().join("added").display().to_string();
    let mut added = config("added", &added_dir);
    added.version_labels = HashMap::from([("stable".to_string(), 3)]);

    // A bad list changes nothing.
    for (what, request) in [
        (
            "missing base path",
            reload(vec![
                config("iris_lr", ""),
                config("ghost", &format!("{}/ghost", elsewhere.path().display())),
            ]),
        ),
        (
            "listed twice",
            reload(vec![config("iris_lr", ""), config("iris_lr", "")]),
        ),
        ("path as name", reload(vec![config("../x", "")])),
        (
            "custom config",
            tfs::ReloadConfigRequest {
                config: Some(tfs::ModelServerConfig {
                    config: Some(tfs::model_server_config::Config::CustomModelConfig(
                        Default::default(),
                    )),
                }),
            },
        ),
        ("no config", tfs::ReloadConfigRequest { config: None }),
    ] {
        let status = models
            .handle_reload_config_request(request)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    // A base path outside the allowed roots is refused, whatever it holds, and
    // changes nothing (`/proc` would list the host's pids as "versions").
    for outside in ["/proc", "/nonexistent/ghost"] {
        let status = models
            .handle_reload_config_request(reload(vec![config("iris_lr", ""), config("p", outside)]))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{outside}: {status:?}"
        );
        assert!(
            status.message().contains("outside the allowed model roots"),
            "{status:?}"
        );
    }
    assert!(client
        .predict(predict_request(
            spec("iris_dt"),
            float_tensor(&[vec![5.1, 3.5, 1.4, 0.2]])
        ))
        .await
        .is_ok());

    // iris_lr (from the repository) and "added" (from elsewhere, with a label) stay;
    // everything else is unloaded.
    let r = models
        .handle_reload_config_request(reload(vec![config("iris_lr", ""), added]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().error_code, tf::error::Code::Ok as i32);
    let by_label = client
        .predict(predict_request(
            Some(ModelSpec {
                name: "added".into(),
                version_label: Some("stable".into()),
                ..Default::default()
            }),
            float_tensor(&[vec![5.1, 3.5, 1.4, 0.2]]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_label.model_spec.unwrap().version, Some(3));
    let status = client
        .predict(predict_request(
            spec("iris_dt"),
            float_tensor(&[vec![5.1, 3.5, 1.4, 0.2]]),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let row = || float_tensor(&[vec![5.9, 3.0, 5.1, 1.8]]);
    // Version 1 of the repository's iris_lr: the logistic regression.
    let lr = Some(ModelSpec {
        name: "iris_lr".into(),
        version: Some(1),
        ..Default::default()
    });
    let lr_answer = client
        .predict(predict_request(lr, row()))
        .await
        .unwrap()
        .into_inner()
        .outputs;

    // "added" pointed at another directory serves that directory's version 3 (here
    // iris_lr's model), not the one loaded from the old path under that number.
    // Before, the call answered OK and the old model kept serving.
    install_model(
        elsewhere.path(),
        "moved",
        3,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let mut moved = config(
        "added",
        &elsewhere.path().join("moved").display().to_string(),
    );
    moved.version_labels = HashMap::from([("stable".to_string(), 3)]);
    let r = models
        .handle_reload_config_request(reload(vec![config("iris_lr", ""), moved.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().error_code, tf::error::Code::Ok as i32);
    let answer = client
        .predict(predict_request(spec("added"), row()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.model_spec.unwrap().version, Some(3));
    assert_eq!(answer.outputs, lr_answer);
    // Pointed at a directory whose config.toml is broken, it keeps what it served
    // and the call says so; once the file is mended, the directory's own
    // versions serve, nothing of the one before.
    install_model(
        elsewhere.path(),
        "misconfigured",
        3,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    let config_toml = elsewhere.path().join("misconfigured/config.toml");
    std::fs::write(&config_toml, "version_policy = [").unwrap();
    let misconfigured = config(
        "added",
        &elsewhere.path().join("misconfigured").display().to_string(),
    );
    let status = models
        .handle_reload_config_request(reload(vec![config("iris_lr", ""), misconfigured.clone()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("config.toml"), "{status:?}");
    std::fs::write(&config_toml, "").unwrap();
    let r = models
        .handle_reload_config_request(reload(vec![config("iris_lr", ""), misconfigured]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().error_code, tf::error::Code::Ok as i32);
    let answer = client
        .predict(predict_request(spec("added"), row()))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(answer.outputs, lr_answer, "still the directory before");

    // Pointed at a directory with no versions, it serves nothing: UNAVAILABLE.
    std::fs::create_dir_all(elsewhere.path().join("empty")).unwrap();
    let empty = config(
        "added",
        &elsewhere.path().join("empty").display().to_string(),
    );
    let status = models
        .handle_reload_config_request(reload(vec![config("iris_lr", ""), empty]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // A label naming a version the model does not have fails the call, as in TF
    // Serving (allow_version_labels_for_unavailable_models is off).
    moved.version_labels = HashMap::from([("stable".to_string(), 7)]);
    let status = models
        .handle_reload_config_request(reload(vec![config("iris_lr", ""), moved]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("stable"), "{status:?}");
    assert!(client
        .predict(predict_request(
            spec("iris_lr"),
            float_tensor(&[vec![5.1, 3.5, 1.4, 0.2]])
        ))
        .await
        .is_ok());

    // A stopped model stays stopped, and the call says so (it said "not found").
    let (code, body) = server
        .post_json(
            "/v2/repository/models/iris_lr/unload",
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let status = models
        .handle_reload_config_request(reload(vec![config("iris_lr", "")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("\"iris_lr\" is stopped"),
        "{status:?}"
    );
    server.stop().await;
}
