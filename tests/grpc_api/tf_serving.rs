//! TF Serving's PredictionService and ModelService over gRPC.

use super::*;

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
