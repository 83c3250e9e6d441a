//! gRPC calls for a deployed model, forwarded to its worker.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_for_a_deployed_model_reach_its_worker() {
    use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
    use ferroserve_proto::inference::model_infer_request::InferInputTensor;
    use ferroserve_proto::inference::{InferTensorContents, ModelInferRequest};

    let repo = tempfile::tempdir().unwrap();
    install(
        repo.path(),
        "hog",
        "tests/fixtures/onnx/memory_hog/model.onnx",
    );
    let (server, grpc_port) = start_server_with_grpc(repo.path(), port_range(20), &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "hog"})).await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);
    let mut client = GrpcInferenceServiceClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .unwrap();
    let request = || ModelInferRequest {
        model_name: "hog".into(),
        inputs: vec![InferInputTensor {
            name: "mib".into(),
            datatype: "INT64".into(),
            shape: vec![1],
            contents: Some(InferTensorContents {
                int64_contents: vec![2],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let answer = client.model_infer(request()).await.unwrap().into_inner();
    assert_eq!(answer.model_name, "hog");
    assert_eq!(
        answer.outputs[0].contents.as_ref().unwrap().fp32_contents,
        vec![524288.0]
    );
    // Forwarded, not answered by the main server's own copy: with the worker down
    // the call is UNAVAILABLE, and it answers again once the worker is back.
    kill9(pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_unavailable = false;
    loop {
        match client.model_infer(request()).await {
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                saw_unavailable = true;
            }
            Ok(_) if saw_unavailable => break,
            Ok(_) => {}
        }
        assert!(Instant::now() < deadline, "no UNAVAILABLE then recovery");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let entry = registry(&server, "hog").await;
    assert_ne!(pid_of(&entry), pid);
    assert!(entry["grpc_port"].as_u64().unwrap() > 0, "{entry}");
}

/// A deployed model's gRPC answer over 4 MiB (tonic's default for what a client
/// decodes) reaches the client through the main server, over both gRPC APIs, as
/// the same model's answer does in process: the main server forwards within its
/// own message limits (`--grpc-max-send-bytes`, 64 MiB by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_models_grpc_answer_over_4_mib_is_forwarded() {
    use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
    use ferroserve_proto::inference::model_infer_request::InferInputTensor;
    use ferroserve_proto::inference::{InferTensorContents, ModelInferRequest};
    use ferroserve_proto::tensorflow as tf;
    use ferroserve_proto::tensorflow::serving as tfs;
    use tfs::prediction_service_client::PredictionServiceClient;

    // 360,000 rows: 4.3 MB of probabilities (3 floats a row) in either answer.
    const ROWS: usize = 360_000;
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let (server, grpc_port) = start_server_with_grpc(
        repo.path(),
        port_range(20),
        &["--max-request-rows", "400000"],
    )
    .await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let url = format!("http://127.0.0.1:{grpc_port}");
    let values: Vec<f32> = ROW
        .iter()
        .map(|&v| v as f32)
        .cycle()
        .take(ROWS * 4)
        .collect();

    let mut v2 = GrpcInferenceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let answer = v2
        .model_infer(ModelInferRequest {
            model_name: "iris".into(),
            inputs: vec![InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![ROWS as i64, 4],
                contents: Some(InferTensorContents {
                    fp32_contents: values.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("V2 ModelInfer: {s:?}\n{}", server.log()))
        .into_inner();
    assert!(prost::Message::encoded_len(&answer) > 4 << 20);
    let probabilities = answer
        .outputs
        .iter()
        .find(|o| o.name == "probabilities")
        .unwrap_or_else(|| panic!("no probabilities: {:?}", answer.outputs.len()));
    assert_eq!(probabilities.shape, [ROWS as i64, 3]);
    let scores = &probabilities.contents.as_ref().unwrap().fp32_contents;
    assert_eq!(scores.len(), ROWS * 3);
    // Every row is the same setosa row.
    assert!(
        scores[0] > 0.9 && scores[ROWS * 3 - 3] == scores[0],
        "{:?}",
        &scores[..3]
    );

    let mut tf_client = PredictionServiceClient::connect(url)
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let dims = [ROWS as i64, 4]
        .iter()
        .map(|&size| tf::tensor_shape_proto::Dim {
            size,
            name: String::new(),
        })
        .collect();
    let answer = tf_client
        .predict(tfs::PredictRequest {
            model_spec: Some(tfs::ModelSpec {
                name: "iris".into(),
                ..Default::default()
            }),
            inputs: std::collections::HashMap::from([(
                "input".to_string(),
                tf::TensorProto {
                    dtype: tf::DataType::DtFloat as i32,
                    tensor_shape: Some(tf::TensorShapeProto {
                        dim: dims,
                        unknown_rank: false,
                    }),
                    float_val: values,
                    ..Default::default()
                },
            )]),
            output_filter: vec![],
        })
        .await
        .unwrap_or_else(|s| panic!("TF Predict: {s:?}\n{}", server.log()))
        .into_inner();
    assert!(prost::Message::encoded_len(&answer) > 4 << 20);
    let probabilities = &answer.outputs["probabilities"];
    let count = if probabilities.tensor_content.is_empty() {
        probabilities.float_val.len()
    } else {
        probabilities.tensor_content.len() / 4
    };
    assert_eq!(count, ROWS * 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_metadata_status_and_classify_are_forwarded() {
    use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
    use ferroserve_proto::inference::{ModelMetadataRequest, ModelReadyRequest};
    use ferroserve_proto::tensorflow as tf;
    use ferroserve_proto::tensorflow::serving as tfs;
    use tfs::model_service_client::ModelServiceClient;
    use tfs::prediction_service_client::PredictionServiceClient;

    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    std::fs::write(
        repo.path().join("iris/config.toml"),
        "feature_names = [\"sl\", \"sw\", \"pl\", \"pw\"]\n[labels]\nstable = 1\n",
    )
    .unwrap();
    let (server, grpc_port) = start_server_with_grpc(repo.path(), port_range(20), &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let entry = registry(&server, "iris").await;
    let main_url = format!("http://127.0.0.1:{grpc_port}");
    let worker_url = format!("http://127.0.0.1:{}", entry["grpc_port"]);
    let mut main = PredictionServiceClient::connect(main_url.clone())
        .await
        .unwrap();
    let mut direct = PredictionServiceClient::connect(worker_url.clone())
        .await
        .unwrap();
    let mut main_models = ModelServiceClient::connect(main_url.clone()).await.unwrap();
    let mut direct_models = ModelServiceClient::connect(worker_url.clone())
        .await
        .unwrap();
    let mut main_health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(main_url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let mut main_v2 = GrpcInferenceServiceClient::connect(main_url).await.unwrap();
    let mut direct_v2 = GrpcInferenceServiceClient::connect(worker_url)
        .await
        .unwrap();

    let spec = |label: Option<&str>| {
        Some(tfs::ModelSpec {
            name: "iris".into(),
            version_label: label.map(str::to_string),
            ..Default::default()
        })
    };
    let example = tf::Example {
        features: Some(tf::Features {
            feature: ["sl", "sw", "pl", "pw"]
                .iter()
                .zip(ROW)
                .map(|(name, v)| {
                    let value = vec![v as f32];
                    let kind = tf::feature::Kind::FloatList(tf::FloatList { value });
                    (name.to_string(), tf::Feature { kind: Some(kind) })
                })
                .collect(),
        }),
    };
    let input = Some(tfs::Input {
        kind: Some(tfs::input::Kind::ExampleList(tfs::ExampleList {
            examples: vec![example],
        })),
    });
    // Each answer (or error) through the main server is the worker's own.
    macro_rules! same {
        ($main:expr, $direct:expr) => {{
            let (m, d) = ($main.await, $direct.await);
            match (&m, &d) {
                (Ok(m), Ok(d)) => assert_eq!(m.get_ref(), d.get_ref()),
                (Err(m), Err(d)) => {
                    assert_eq!((m.code(), m.message()), (d.code(), d.message()))
                }
                _ => panic!("main {m:?}, worker {d:?}"),
            }
            m
        }};
    }
    let metadata = || tfs::GetModelMetadataRequest {
        model_spec: spec(None),
        metadata_field: vec!["signature_def".into()],
    };
    // The signature map's encoding follows a hash map's order: compared decoded.
    let signatures = |r: tonic::Response<tfs::GetModelMetadataResponse>| {
        let r = r.into_inner();
        let any = &r.metadata["signature_def"];
        let map = <tfs::SignatureDefMap as prost::Message>::decode(any.value.as_slice()).unwrap();
        (r.model_spec, any.type_url.clone(), map)
    };
    let meta = signatures(main.get_model_metadata(metadata()).await.unwrap());
    assert_eq!(
        meta,
        signatures(direct.get_model_metadata(metadata()).await.unwrap())
    );
    assert!(
        meta.2.signature_def.contains_key("serving_default"),
        "{meta:?}"
    );
    let status = || tfs::GetModelStatusRequest {
        model_spec: spec(Some("stable")),
    };
    let status = same!(
        main_models.get_model_status(status()),
        direct_models.get_model_status(status())
    )
    .unwrap();
    assert_eq!(status.get_ref().model_version_status[0].version, 1);
    let classify = || tfs::ClassificationRequest {
        model_spec: spec(None),
        input: input.clone(),
    };
    let classified = same!(main.classify(classify()), direct.classify(classify())).unwrap();
    let classes = &classified
        .get_ref()
        .result
        .as_ref()
        .unwrap()
        .classifications[0]
        .classes;
    assert_eq!(classes.len(), 3, "{classified:?}");
    let regress = || tfs::RegressionRequest {
        model_spec: spec(None),
        input: input.clone(),
    };
    let _ = same!(main.regress(regress()), direct.regress(regress()));
    let multi = || tfs::MultiInferenceRequest {
        tasks: vec![tfs::InferenceTask {
            model_spec: spec(None),
            method_name: "tensorflow/serving/classify".into(),
        }],
        input: input.clone(),
    };
    same!(
        main.multi_inference(multi()),
        direct.multi_inference(multi())
    )
    .unwrap();
    let v2_meta = || ModelMetadataRequest {
        name: "iris".into(),
        version: String::new(),
    };
    same!(
        main_v2.model_metadata(v2_meta()),
        direct_v2.model_metadata(v2_meta())
    )
    .unwrap();
    let ready = || ModelReadyRequest {
        name: "iris".into(),
        version: String::new(),
    };
    let ready = same!(main_v2.model_ready(ready()), direct_v2.model_ready(ready())).unwrap();
    assert!(ready.get_ref().ready);
    // Its gRPC health is its worker's word (the main server holds no copy of it).
    let health = main_health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "iris".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        health.get_ref().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // A worker that is down: UNAVAILABLE (a client retries), never the main
    // server's own answer (it holds no copy: NOT_FOUND).
    kill9(pid_of(&entry));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_unavailable = false;
    loop {
        match main_models.get_model_status(status_request()).await {
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                saw_unavailable = true;
            }
            Ok(_) if saw_unavailable => break,
            Ok(_) => {}
        }
        assert!(Instant::now() < deadline, "no UNAVAILABLE then recovery");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    fn status_request() -> tfs::GetModelStatusRequest {
        tfs::GetModelStatusRequest {
            model_spec: Some(tfs::ModelSpec {
                name: "iris".into(),
                ..Default::default()
            }),
        }
    }
}
