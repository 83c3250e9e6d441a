//! Classify and regress signatures (TF Serving REST and gRPC, the simple API)
//! against TensorFlow.

use super::*;

/// A tf.Example from TF Serving REST's JSON features, as `tf_example` in
/// python/make_tf_models.py builds it.
fn tf_example(features: &Value) -> ferroserve_proto::tensorflow::Example {
    use ferroserve_proto::tensorflow::{
        feature, BytesList, Example, Feature, Features, FloatList, Int64List,
    };
    let feature = |v: &Value| {
        let values: Vec<Value> = match v {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        let kind = if values.iter().all(Value::is_i64) {
            feature::Kind::Int64List(Int64List {
                value: values.iter().map(|v| v.as_i64().unwrap()).collect(),
            })
        } else if values.iter().all(Value::is_number) {
            feature::Kind::FloatList(FloatList {
                value: values.iter().map(|v| v.as_f64().unwrap() as f32).collect(),
            })
        } else {
            feature::Kind::BytesList(BytesList {
                value: values
                    .iter()
                    .map(|v| v.as_str().unwrap().as_bytes().to_vec())
                    .collect(),
            })
        };
        Feature { kind: Some(kind) }
    };
    Example {
        features: Some(Features {
            feature: object(features, "features")
                .iter()
                .map(|(k, v)| (k.clone(), feature(v)))
                .collect(),
        }),
    }
}

/// `[[label, score], ...]` per example, labels exact and scores within 1e-6.
fn assert_classes(got: &[Vec<(String, f64)>], want: &Value, what: &str) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
    for (i, (row, expected)) in got.iter().zip(want).enumerate() {
        let expected = expected.as_array().unwrap();
        assert_eq!(row.len(), expected.len(), "{what}[{i}]: {row:?}");
        for (j, ((label, score), e)) in row.iter().zip(expected).enumerate() {
            assert_eq!(label, e[0].as_str().unwrap(), "{what}[{i}][{j}] label");
            assert_close(
                *score,
                e[1].as_f64().unwrap(),
                1e-6,
                &format!("{what}[{i}][{j}]"),
            );
        }
    }
}

fn rest_classes(body: &Value) -> Vec<Vec<(String, f64)>> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {body}"))
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|pair| {
                    (
                        pair[0].as_str().unwrap().to_string(),
                        pair[1].as_f64().unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

fn grpc_classes(result: &tfs::ClassificationResult) -> Vec<Vec<(String, f64)>> {
    result
        .classifications
        .iter()
        .map(|c| {
            c.classes
                .iter()
                .map(|class| (class.label.clone(), class.score as f64))
                .collect()
        })
        .collect()
}

fn example_list(examples: &Value) -> Option<tfs::Input> {
    Some(tfs::Input {
        kind: Some(tfs::input::Kind::ExampleList(tfs::ExampleList {
            examples: examples
                .as_array()
                .unwrap()
                .iter()
                .map(tf_example)
                .collect(),
        })),
    })
}

pub(crate) fn spec(model: &str, signature: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: model.into(),
        signature_name: signature.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_and_regress_signatures_answer_like_tensorflow() {
    let repo = repo(&["tf1_classifier", "mlp"]);
    let server = TestServer::start_with(settings(repo.path())).await;
    let exp = expected("tf1_classifier");
    let examples = &exp["examples"];
    let path = "/v1/models/tf1_classifier";

    // REST :classify, the default signature and a scores-only one.
    for signature in ["serving_default", "scores_only"] {
        let mut body = json!({ "examples": examples });
        if signature != "serving_default" {
            body["signature_name"] = json!(signature);
        }
        let (status, answer) = server.post_json(&format!("{path}:classify"), &body).await;
        assert_eq!(status, 200, "{signature}: {answer}");
        assert_classes(
            &rest_classes(&answer),
            &exp["classify"][signature],
            &format!("REST classify {signature}"),
        );
    }
    // With a context: each example gets the context's features.
    let (status, answer) = server
        .post_json(
            &format!("{path}:classify"),
            &json!({
                "signature_name": "classification",
                "context": exp["context"],
                "examples": exp["examples_with_context"],
            }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_classes(
        &rest_classes(&answer),
        &exp["classify_with_context"],
        "REST classify with context",
    );
    // REST :regress.
    let (status, answer) = server
        .post_json(
            &format!("{path}:regress"),
            &json!({"signature_name": "regression", "examples": examples}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let values: Vec<Value> = answer["results"].as_array().unwrap().clone();
    assert_values(
        &values,
        &json!({"dtype": "float32", "data": exp["regress"]}),
        "REST regress",
    );

    // gRPC Classify and Regress with the real messages.
    let mut client = PredictionServiceClient::new(server.grpc_channel().await);
    let response = client
        .classify(tfs::ClassificationRequest {
            model_spec: spec("tf1_classifier", ""),
            input: example_list(examples),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.model_spec.as_ref().unwrap().signature_name,
        "serving_default"
    );
    assert_classes(
        &grpc_classes(response.result.as_ref().unwrap()),
        &exp["classify"]["serving_default"],
        "gRPC classify",
    );
    let context_input = tfs::Input {
        kind: Some(tfs::input::Kind::ExampleListWithContext(
            tfs::ExampleListWithContext {
                examples: exp["examples_with_context"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(tf_example)
                    .collect(),
                context: Some(tf_example(&exp["context"])),
            },
        )),
    };
    let response = client
        .classify(tfs::ClassificationRequest {
            model_spec: spec("tf1_classifier", "classification"),
            input: Some(context_input),
        })
        .await
        .unwrap()
        .into_inner();
    assert_classes(
        &grpc_classes(response.result.as_ref().unwrap()),
        &exp["classify_with_context"],
        "gRPC classify with context",
    );
    let response = client
        .regress(tfs::RegressionRequest {
            model_spec: spec("tf1_classifier", "regression"),
            input: example_list(examples),
        })
        .await
        .unwrap()
        .into_inner();
    let values: Vec<Value> = response
        .result
        .unwrap()
        .regressions
        .iter()
        .map(|r| json!(r.value as f64))
        .collect();
    assert_values(
        &values,
        &json!({"dtype": "float32", "data": exp["regress"]}),
        "gRPC regress",
    );

    // MultiInference: a classify and a regress task over the same examples.
    let response = client
        .multi_inference(tfs::MultiInferenceRequest {
            tasks: vec![
                tfs::InferenceTask {
                    model_spec: spec("tf1_classifier", "classification"),
                    method_name: "tensorflow/serving/classify".into(),
                },
                tfs::InferenceTask {
                    model_spec: spec("tf1_classifier", "regression"),
                    method_name: "tensorflow/serving/regress".into(),
                },
            ],
            input: example_list(examples),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results.len(), 2);
    // Each result names its task's signature (all said serving_default).
    let names: Vec<&str> = response
        .results
        .iter()
        .map(|r| r.model_spec.as_ref().unwrap().signature_name.as_str())
        .collect();
    assert_eq!(names, ["classification", "regression"]);
    match &response.results[0].result {
        Some(tfs::inference_result::Result::ClassificationResult(r)) => assert_classes(
            &grpc_classes(r),
            &exp["classify"]["serving_default"],
            "MultiInference classify",
        ),
        other => panic!("MultiInference task 0 gave {other:?}"),
    }
    match &response.results[1].result {
        Some(tfs::inference_result::Result::RegressionResult(r)) => assert_values(
            &r.regressions
                .iter()
                .map(|v| json!(v.value as f64))
                .collect::<Vec<_>>(),
            &json!({"dtype": "float32", "data": exp["regress"]}),
            "MultiInference regress",
        ),
        other => panic!("MultiInference task 1 gave {other:?}"),
    }

    // The predict signature over the serialized examples, as TF Serving gets them.
    let serialized: Vec<Vec<u8>> = examples
        .as_array()
        .unwrap()
        .iter()
        .map(|e| tf_example(e).encode_to_vec())
        .collect();
    let response = client
        .predict(tfs::PredictRequest {
            model_spec: spec("tf1_classifier", "predict"),
            inputs: HashMap::from([(
                "examples".to_string(),
                TensorProto {
                    dtype: Dt::DtString as i32,
                    tensor_shape: proto_shape(&[serialized.len()]),
                    string_val: serialized,
                    ..Default::default()
                },
            )]),
            output_filter: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_values(
        &from_proto(&response.outputs["scores"]),
        &exp["predict"]["scores"],
        "gRPC predict on examples",
    );

    // Signatures that cannot classify or regress: 400 / INVALID_ARGUMENT, saying why.
    for (model, verb, body, words) in [
        (
            "tf1_classifier",
            "regress",
            json!({"examples": examples}),
            &["\"serving_default\"", "outputs"][..],
        ),
        (
            "tf1_classifier",
            "classify",
            json!({"signature_name": "regression", "examples": examples}),
            &["\"classes\"", "\"scores\""][..],
        ),
        (
            "tf1_classifier",
            "classify",
            json!({"signature_name": "nope", "examples": examples}),
            &["\"nope\"", "\"regression\""][..],
        ),
        (
            "mlp",
            "classify",
            json!({"examples": [{"features": [1.0, 2.0, 3.0, 4.0]}]}),
            &["serialized tf.Example"][..],
        ),
        (
            "tf1_classifier",
            "classify",
            json!({"examples": [{"x": "not a number"}]}),
            &["x"][..],
        ),
    ] {
        let (status, answer) = server
            .post_json(&format!("/v1/models/{model}:{verb}"), &body)
            .await;
        assert_eq!(status, 400, "{model}:{verb} {body}: {answer}");
        let message = answer["error"].as_str().unwrap();
        for word in words {
            assert!(message.contains(word), "{model}:{verb}: {message}");
        }
    }
    let err = client
        .regress(tfs::RegressionRequest {
            model_spec: spec("tf1_classifier", "scores_only"),
            input: example_list(examples),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    server.stop().await;
}

/// The simple API on a TF1 classification signature (`classes`, `scores`): the
/// prediction is each row's class with the highest score and the probabilities are
/// the scores. It answered every class name (`classes` alone, which TensorFlow
/// computes without parsing the input) for any input, garbage included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simple_api_on_a_classification_signature_answers_the_top_class() {
    let repo = repo(&["tf1_classifier"]);
    let server = TestServer::start_with(settings(repo.path())).await;
    let (status, answer) = server
        .post_json("/predict/tf1_classifier", &json!({"features": ["garbage"]}))
        .await;
    common::assert_error(status, &answer, 400, "");

    let exp = expected("tf1_classifier");
    let examples = exp["examples"].as_array().unwrap();
    let want = exp["classify"]["serving_default"].as_array().unwrap();
    let mut checked = 0;
    for (example, classes) in examples.iter().zip(want) {
        // A JSON feature is text: only examples whose bytes are UTF-8 can be sent.
        let Ok(text) = String::from_utf8(tf_example(example).encode_to_vec()) else {
            continue;
        };
        let classes = classes.as_array().unwrap();
        let scores: Vec<f64> = classes.iter().map(|c| c[1].as_f64().unwrap()).collect();
        let top =
            (0..scores.len()).fold(0, |best, j| if scores[j] > scores[best] { j } else { best });
        let (status, answer) = server
            .post_json("/predict/tf1_classifier", &json!({ "features": [text] }))
            .await;
        assert_eq!(status, 200, "{example}: {answer}");
        assert_eq!(answer["prediction"], classes[top][0], "{example}: {answer}");
        let probabilities = answer["probabilities"].as_array().unwrap();
        assert_eq!(probabilities.len(), scores.len(), "{answer}");
        for (j, (got, want)) in probabilities.iter().zip(&scores).enumerate() {
            assert_close(got.as_f64().unwrap(), *want, 1e-6, &format!("scores[{j}]"));
        }
        checked += 1;
    }
    assert!(checked > 0, "no example of the fixture is UTF-8");
    server.stop().await;
}
