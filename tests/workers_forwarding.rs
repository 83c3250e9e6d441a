//! Isolated deployments (issue 14): what reaches a deployed model's worker and comes
//! back, against the real binary: gRPC, tokens and their scopes, the main server's
//! request bounds, a worker describing itself on its own port, scoring jobs through a
//! worker, and a worker's prediction log and events reaching the main store.

mod common;

use std::time::{Duration, Instant};

use common::workers::*;
use common::{raw_post, root_path};
use serde_json::{json, Value};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_server_reads_its_workers_and_clients_keep_their_scope() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let tokens = repo.path().join("tokens.toml");
    write_tokens(&tokens);
    let server = start_server(
        repo.path(),
        port_range(20),
        &["--auth-tokens", tokens.to_str().unwrap()],
    )
    .await;
    let client = reqwest::Client::new();
    let answer = deploy_iris_as_manager(&server, &client).await;
    let (pid, port) = (pid_of(&answer), answer["port"].as_u64().unwrap());

    // The registry shows what the worker says of its model: the main server reads
    // its status past the worker's tokens file, now and at every health check.
    let registry_entry = || async {
        let (code, entry) = send_with(
            client.get(server.url("/registry/services/iris")),
            Some(READER),
        )
        .await;
        assert_eq!(code, 200, "{entry}");
        entry
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let checked_after = Instant::now() + Duration::from_millis(2500);
    loop {
        let entry = registry_entry().await;
        let good = entry["state"] == "ready"
            && entry["healthy"] == true
            && entry["served_versions"] == json!([1])
            && entry["versions"][0]["state"] == "AVAILABLE";
        if good && Instant::now() > checked_after {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the registry does not show the worker's model: {entry}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, status) = send_with(client.get(server.url("/models/status")), Some(READER)).await;
    assert_eq!(code, 200, "{status}");
    let iris = status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == "iris")
        .unwrap();
    assert_eq!(iris["served_versions"], json!([1]), "{status}");

    // Clients' tokens pass through: the main server and the worker both enforce them.
    let predict = json!({"model_id": "iris", "features": ROW});
    let worker = |path: &str| format!("http://127.0.0.1:{port}{path}");
    for url in [server.url("/predict"), worker("/predict")] {
        let (code, body) = send_with(client.post(&url).json(&predict), Some(READER)).await;
        assert_eq!(code, 200, "{url}: {body}");
        let (code, body) = send_with(client.post(&url).json(&predict), None).await;
        assert_eq!(code, 401, "{url}: {body}");
        let (code, body) = send_with(client.post(&url).json(&predict), Some("fst_wrong")).await;
        assert_eq!(code, 401, "{url}: {body}");
    }
    let instances = json!({"instances": [ROW]});
    let url = server.url("/v1/models/iris:predict");
    let (code, body) = send_with(client.post(&url).json(&instances), Some(READER)).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = send_with(client.post(&url).json(&instances), None).await;
    assert_eq!(code, 401, "{body}");
    for path in ["/models/status", "/v1/models/iris"] {
        let (code, body) = send_with(client.get(worker(path)), None).await;
        assert_eq!(code, 401, "{path}: {body}");
    }
    // Open routes stay open through the main server.
    let (code, body) = send_with(client.get(server.url("/v2/models/iris/ready")), None).await;
    assert_eq!(code, 200, "{body}");

    // The supervisor's token reaches the worker in its environment only: not on its
    // command line, not in the registry, not in the logs, and it opens nothing on
    // the main server.
    let token = initial_env(pid, "FERROSERVE_SUPERVISOR_TOKEN").expect("the worker got a token");
    assert!(token.len() >= 40, "a short token");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&token));
    let (_, list) = send_with(client.get(server.url("/registry/services")), Some(READER)).await;
    assert!(!list.to_string().contains(&token), "{list}");
    assert!(!server.log().contains(&token));
    let (code, body) = send_with(client.get(worker("/models/status")), Some(&token)).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = send_with(client.get(server.url("/models/status")), Some(&token)).await;
    assert_eq!(code, 401, "{body}");
}

/// `--metrics-require-token` holds on a worker's port as on the main server's: its
/// `/metrics`, the metrics' second path (`--monitoring_config_file`) and the
/// console's chart data need the `metrics` scope. A worker was started without the
/// setting (and without the second path), so they answered anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_the_metrics_behind_a_token() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let tokens = repo.path().join("tokens.toml");
    write_tokens(&tokens);
    let monitoring = repo.path().join("monitoring.config");
    std::fs::write(
        &monitoring,
        "prometheus_config { enable: true, path: \"/monitoring/prometheus/metrics\" }\n",
    )
    .unwrap();
    let server = start_server(
        repo.path(),
        port_range(20),
        &[
            "--auth-tokens",
            tokens.to_str().unwrap(),
            "--metrics-require-token",
            &format!("--monitoring_config_file={}", monitoring.display()),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let answer = deploy_iris_as_manager(&server, &client).await;
    let port = answer["port"].as_u64().unwrap();
    let worker = format!("http://127.0.0.1:{port}");
    for base in [server.url(""), worker] {
        for path in [
            "/metrics",
            "/monitoring/prometheus/metrics",
            "/console/api/models/iris/metrics",
        ] {
            let url = format!("{base}{path}");
            // (token, status): none, a token without the scope, the scraper's.
            for (token, status) in [(None, 401), (Some(READER), 403), (Some(PROMETHEUS), 200)] {
                let (code, body) = send_with(client.get(&url), token).await;
                assert_eq!(code, status, "{url} with {token:?}: {body}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoring_job_on_a_deployed_model_scores_through_its_worker() {
    let (dir, repo) = scoring_repo();
    let data = dir.path().join("data");
    let server = start_server(
        &repo,
        port_range(20),
        &["--data-dir", data.to_str().unwrap()],
    )
    .await;
    let job = |sink: &str| {
        json!({"kind": "score", "spec": {
            "model": "iris", "source": {"path": "in.csv"}, "sink": {"path": sink},
            "carry": ["id"], "batch_size": 3,
        }})
    };
    let score = |sink: &'static str| {
        let (url, body) = (server.url("/v1/jobs"), job(sink));
        let (server, data) = (&server, data.clone());
        async move {
            let (code, body) = post(url, &body).await;
            assert_eq!(code, 202, "{body}");
            let done = wait_job(server, body["job_id"].as_str().unwrap()).await;
            assert_eq!(done["state"], "succeeded", "{done}\n{}", server.log());
            assert_eq!(done["result"]["version"], 1, "{done}");
            assert_eq!(done["progress"]["rows_written"], 4, "{done}");
            std::fs::read_to_string(data.join(sink)).unwrap()
        }
    };
    // Served in-process.
    let in_process = score("before.csv").await;
    assert!(
        in_process.starts_with("id,predict,predict_proba_setosa,"),
        "{in_process}"
    );

    // Deployed: the job's batches go to the worker, the main server never loads
    // the model, and the output is the same, value for value.
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let pid = pid_of(&answer);
    let deployed_at = now_ms();
    assert_eq!(score("during.csv").await, in_process);
    let loads: Vec<Value> = in_process_states(&server, "iris", deployed_at)
        .await
        .into_iter()
        .filter(|e| e["detail"]["to"] == "LOADING")
        .collect();
    assert!(loads.is_empty(), "the main server loaded iris: {loads:?}");
    assert_eq!(registry(&server, "iris").await["pid"], json!(pid));
    // Its batches (4 rows, 3 a batch) were the worker's V2 requests.
    let port = answer["port"].as_u64().unwrap();
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v2_requests: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("ferroserve_requests_total")
                && l.contains("protocol=\"v2_rest\"")
                && l.contains("model=\"iris\"")
        })
        .collect();
    assert!(
        v2_requests.iter().any(|l| l.ends_with(" 2")),
        "{v2_requests:?}\n{metrics}"
    );
    // The plan the job used is the worker's, through the main server too.
    let (code, plan) = get(server.url("/v1/scoring-plans/iris")).await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(
        (code, &plan),
        (
            200,
            &get(format!("http://127.0.0.1:{port}/v1/scoring-plans/iris"))
                .await
                .1
        )
    );
    assert_eq!(plan["inputs"][0]["features"][0], "sepal_length", "{plan}");
    assert_eq!(
        plan["class_labels"],
        json!(["setosa", "versicolor", "virginica"]),
        "{plan}"
    );
    // Checked at submission against the worker's model.
    for (bad, what) in [
        (json!({"outputs": ["nope"]}), "spec.outputs"),
        (json!({"version": 7}), "spec.version"),
    ] {
        let mut body = job("never.csv");
        for (k, v) in bad.as_object().unwrap() {
            body["spec"][k] = v.clone();
        }
        let (code, answer) = post(server.url("/v1/jobs"), &body).await;
        assert_eq!(code, 400, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(what), "{answer}");
    }

    // Back in process: the same again.
    let (code, body) = send(reqwest::Client::new().post(server.url("/stop_deployment/iris"))).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(score("after.csv").await, in_process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_models_log_and_events_reach_the_main_store_and_outlive_its_worker() {
    let (_dir, repo) = scoring_repo();
    let mut config = std::fs::read_to_string(repo.join("iris/config.toml")).unwrap();
    config.push_str("[log]\nsample_rate = 1.0\n");
    std::fs::write(repo.join("iris/config.toml"), config).unwrap();
    let server = start_server(&repo, port_range(20), &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let port = answer["port"].as_u64().unwrap();
    let worker_dir = repo.join(format!(".ferroserve/workers/iris-{port}"));
    assert!(worker_dir.join("worker.db").is_file());
    for row in [
        [5.1, 3.5, 1.4, 0.2],
        [6.2, 2.9, 4.3, 1.3],
        [7.7, 3.0, 6.1, 2.3],
    ] {
        let (code, body) = post(
            server.url("/v1/models/iris:predict"),
            &json!({"instances": [row]}),
        )
        .await;
        assert_eq!(code, 200, "{body}");
    }
    let logged = || async {
        let (code, text) = send_text(server.url("/v1/models/iris/predictions")).await;
        assert_eq!(code, 200, "{text}");
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    // The worker logged them; within a few seconds they are the main server's.
    let deadline = Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let rows = logged().await;
        if rows.len() == 3 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows.len(), 3, "{rows:?}\n{}", server.log());
    assert_eq!(
        rows[2]["inputs"]["input"],
        json!([[7.7, 3.0, 6.1, 2.3]]),
        "{rows:?}"
    );
    assert_eq!(rows[0]["version"], 1, "{rows:?}");
    // So are the worker's version state changes, recorded by the worker.
    let (code, history) = get(server.url("/v1/models/iris/history")).await;
    assert_eq!(code, 200, "{history}");
    let main = format!(":{}", server.pid());
    let by_worker: Vec<&Value> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "state" && !e["replica"].as_str().unwrap().ends_with(&main))
        .collect();
    assert!(
        by_worker.iter().any(|e| e["detail"]["to"] == "AVAILABLE"),
        "{history}"
    );

    // One more, then the deployment ends: its records are moved before its state
    // directory goes, and stay.
    let (code, body) = post(
        server.url("/v1/models/iris:predict"),
        &json!({"instances": [[5.9, 3.0, 5.1, 1.8]]}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = send(reqwest::Client::new().post(server.url("/stop_deployment/iris"))).await;
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while worker_dir.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!worker_dir.exists(), "{}", server.log());
    let rows = logged().await;
    assert_eq!(rows.len(), 4, "{rows:?}\n{}", server.log());
    assert_eq!(
        rows[3]["inputs"]["input"],
        json!([[5.9, 3.0, 5.1, 1.8]]),
        "{rows:?}"
    );
}

/// A worker's own port serves its model, never management: a deploy, a stop, a
/// reload, an upload, a delete or a repository load/unload sent to it (REST or
/// gRPC) is refused, whatever the token (a manager's, the supervisor's, none),
/// naming the main server, and the main server's deployment is untouched. A worker
/// took them with a management token (or from loopback): a deploy there changed the
/// worker's timeout behind the registry's back, a stop there left the main server
/// answering 404 for a model its registry called ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_management_on_its_own_port() {
    use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
    use ferroserve_proto::inference::RepositoryModelUnloadRequest;
    use ferroserve_proto::tensorflow::serving as tfs;
    use ferroserve_proto::tensorflow::serving::model_service_client::ModelServiceClient;

    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let tokens = repo.path().join("tokens.toml");
    write_tokens(&tokens);
    let server = start_server(
        repo.path(),
        port_range(20),
        &["--auth-tokens", tokens.to_str().unwrap()],
    )
    .await;
    let client = reqwest::Client::new();
    let answer = deploy_iris_as_manager(&server, &client).await;
    let (pid, port) = (pid_of(&answer), answer["port"].as_u64().unwrap());
    let supervisor = initial_env(pid, "FERROSERVE_SUPERVISOR_TOKEN").unwrap();
    let worker = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let registry_entry = || async {
        let request = client.get(server.url("/registry/services/iris"));
        let (code, entry) = send_with(request, Some(READER)).await;
        assert_eq!(code, 200, "{entry}");
        entry
    };
    let main_url = server.url("");
    let refused = |code: u16, body: &Value, what: &str| {
        assert_eq!(code, 403, "{what}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("management goes through the main server at")
                && message.contains(main_url.trim_end_matches('/')),
            "{what}: {body}"
        );
    };
    let model_file = std::fs::read(root_path("examples/models/iris_lr/1/model.onnx")).unwrap();
    for token in [Some(MANAGER), Some(supervisor.as_str()), None] {
        let what = |route: &str| format!("{route} with {:?}", token.map(|t| &t[..8]));
        let requests = [
            (
                "deploy",
                client
                    .post(worker("/deploy"))
                    .json(&json!({"model_id": "iris", "resources": {"timeout": 0.5}})),
            ),
            ("stop", client.post(worker("/stop_deployment/iris"))),
            ("reload", client.post(worker("/reload_model"))),
            ("delete", client.delete(worker("/delete_model/iris"))),
            (
                "unload",
                client.post(worker("/v2/repository/models/iris/unload")),
            ),
            (
                "upload",
                client.post(worker("/upload_model")).multipart(
                    reqwest::multipart::Form::new()
                        .text("model_id", "iris")
                        .part(
                            "file",
                            reqwest::multipart::Part::bytes(model_file.clone())
                                .file_name("iris.onnx"),
                        ),
                ),
            ),
        ];
        for (route, request) in requests {
            let (code, body) = send_with(request, token).await;
            refused(code, &body, &what(route));
        }
    }
    // gRPC too, on the worker's own gRPC port.
    let grpc_port = registry_entry().await["grpc_port"].as_u64().unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    fn with_manager<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {MANAGER}").parse().unwrap(),
        );
        request
    }
    let status = ModelServiceClient::new(channel.clone())
        .handle_reload_config_request(with_manager(tfs::ReloadConfigRequest {
            config: Some(tfs::ModelServerConfig {
                config: Some(tfs::model_server_config::Config::ModelConfigList(
                    tfs::ModelConfigList { config: vec![] },
                )),
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("main server"), "{status:?}");
    let status = GrpcInferenceServiceClient::new(channel)
        .repository_model_unload(with_manager(RepositoryModelUnloadRequest {
            model_name: "iris".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // What the main server needs of its worker still answers it, and the
    // deployment is as the main server made it: same worker, no timeout, serving.
    let (code, body) = send_with(client.get(worker("/models/status")), Some(&supervisor)).await;
    assert_eq!(code, 200, "{body}");
    let entry = registry_entry().await;
    assert_eq!(pid_of(&entry), pid, "{entry}");
    assert_eq!(entry["state"], "ready", "{entry}");
    assert_eq!(entry["limits"]["timeout_secs"], Value::Null, "{entry}");
    let predict = json!({"model_id": "iris", "features": ROW});
    for url in [server.url("/predict"), worker("/predict")] {
        let (code, body) = send_with(client.post(&url).json(&predict), Some(READER)).await;
        assert_eq!(code, 200, "{url}: {body}");
    }
    let (code, history) = send_with(
        client.get(server.url("/v1/models/iris/history")),
        Some(MANAGER),
    )
    .await;
    assert_eq!(code, 200, "{history}");
    let deploys = history.to_string().matches("\"deploy\"").count();
    assert!(
        deploys <= 1,
        "a deploy on the worker reached the history: {history}"
    );
}

/// The main server's bounds on one request hold for a deployed model as for an
/// in-process one, through the main server and on the worker's port: too many
/// rows, too large a body (declared, or chunked with no length), too large an
/// answer. The worker got none of them, so it took what the main server refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_model_keeps_the_main_servers_request_bounds() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    install(repo.path(), "local", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(
        repo.path(),
        port_range(20),
        &[
            "--max-request-rows",
            "10",
            "--max-request-bytes",
            "4000",
            "--max-response-bytes",
            "600",
        ],
    )
    .await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let port = answer["port"].as_u64().unwrap();
    let main: std::net::SocketAddr = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let worker: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rows = |n: usize| json!({"instances": vec![ROW; n]}).to_string();
    let padded = format!(
        r#"{{"instances": [{:?}], "pad": "{}"}}"#,
        ROW,
        "x".repeat(5000)
    );
    // (what, body, chunked, status, words)
    let cases = [
        ("one row", rows(1), false, 200, ""),
        ("11 rows", rows(11), false, 413, "rows"),
        (
            "a 5 kB body",
            padded.clone(),
            false,
            413,
            "larger than the limit of 4000 bytes",
        ),
        (
            "a chunked 5 kB body",
            padded,
            true,
            413,
            "larger than the limit of 4000 bytes",
        ),
        ("a 10-row answer", rows(10), false, 413, ""),
    ];
    for (what, body, chunked, status, words) in cases {
        let (in_process, _, local_body) =
            raw_post(main, "/v1/models/local:predict", &body, chunked).await;
        assert_eq!(in_process, status, "in-process, {what}: {local_body}");
        for (addr, via) in [(main, "the main server"), (worker, "the worker's port")] {
            let (code, _, text) = raw_post(addr, "/v1/models/iris:predict", &body, chunked).await;
            assert_eq!(code, status, "deployed, {what}, via {via}: {text}");
            assert!(text.contains(words), "deployed, {what}, via {via}: {text}");
            if status != 200 {
                // The same words as the in-process model's answer.
                assert_eq!(
                    text.replace("iris", "local"),
                    local_body,
                    "deployed, {what}, via {via}"
                );
            }
        }
    }
}

/// A deployed model reads a request body as an in-process one does: a JSON body
/// labelled a form (what `curl -d '{…}'` sends) reaches its worker (it was 404,
/// the forwarding layer read the body as a form), and a body that stops arriving
/// is the client's 408, not a 503 that blames (and names as restarting) the worker,
/// which keeps serving, unrestarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_model_reads_request_bodies_as_an_in_process_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    install(repo.path(), "local", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(
        repo.path(),
        port_range(20),
        &["--body-read-timeout-secs", "1"],
    )
    .await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);
    let client = reqwest::Client::new();
    for model in ["local", "iris"] {
        let (code, body) = send(
            client
                .post(server.url("/predict"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(json!({"model_id": model, "features": ROW}).to_string()),
        )
        .await;
        assert_eq!(code, 200, "{model}: {body}");
        assert_eq!(body["model_id"], model, "{body}");
    }

    let main: std::net::SocketAddr = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let stalled = |path: String| async move {
        let mut stream = tokio::net::TcpStream::connect(main).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {main}\r\nContent-Type: application/json\r\n\
             Content-Length: 200\r\nConnection: close\r\n\r\n{{\"instances\": ["
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
            .await
            .expect("no answer to a stalled body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status: u16 = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    };
    let (code, local) = stalled("/v1/models/local:predict".into()).await;
    assert_eq!(code, 408, "{local}");
    for path in ["/v1/models/iris:predict", "/v2/models/iris/infer"] {
        let (code, body) = stalled(path.into()).await;
        assert_eq!(code, 408, "{path}: {body}");
        assert!(body.contains("stopped arriving for 1s"), "{path}: {body}");
    }
    // The worker was never blamed: it serves on, the same process, no restarts.
    let entry = registry(&server, "iris").await;
    assert_eq!(pid_of(&entry), pid, "{entry}");
    assert_eq!(entry["restarts"], 0, "{entry}");
    assert_eq!(entry["state"], "ready", "{entry}");
    let (code, body) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
}

/// A worker tells what it is on its own port, where clients may call it. Its
/// `/models/status` shows its model's deployment as the supervisor applied it to
/// the worker (the main server's word: CPU and memory limits given and enforced;
/// they were shown absent and not enforced). Its console says whose worker it is,
/// links the main server and offers no management (it offered Deploy and Upload
/// forms that could only be refused, and said workers were off with the limits
/// not applied). Its `/registry/services` points at the main server's registry (it
/// said `--worker-ports off`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_describes_itself_on_its_own_port() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(repo.path(), port_range(4), &[]).await;
    let (code, answer) = deploy(
        &server,
        json!({"model_id": "iris", "environment": "staging",
               "resources": {"cpu_limit": "500m", "memory_limit": "256Mi", "timeout": 2}}),
    )
    .await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let port = answer["port"].as_u64().unwrap();
    let worker = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let main_url = server.url("").trim_end_matches('/').to_string();

    // Its status: the deployment as the main server and its registry report it.
    let main_entry = model_status(&server, "iris").await;
    let registry_entry = registry(&server, "iris").await;
    let (code, status) = get(worker("/models/status")).await;
    assert_eq!(code, 200, "{status}");
    let own = status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == "iris")
        .unwrap_or_else(|| panic!("iris not in {status}"))
        .clone();
    let deployment = &own["deployment"];
    assert_eq!(deployment, &main_entry["deployment"], "{own}");
    assert_eq!(deployment["environment"], "staging", "{own}");
    assert_eq!(
        deployment["resources"],
        json!({"cpu_limit": "500m", "memory_limit": "256Mi", "timeout": 2.0}),
        "{own}"
    );
    assert_eq!(
        deployment["enforced"],
        json!({"cpu_limit": true, "memory_limit": true, "timeout": true}),
        "{own}"
    );
    assert_eq!(deployment["enforcement"], registry_entry["enforcement"]);
    assert_eq!(deployment["resources"], registry_entry["resources"]);

    // Its console: whose worker it is, the main server's link, no management.
    let (code, page) = send_text(worker("/console/models/iris")).await;
    assert_eq!(code, 200, "{page}");
    for says in [
        "worker process of model <span class=\"mono\">iris</span>",
        &format!("href=\"{main_url}/console\""),
        &format!("href=\"{main_url}/console/models/iris\""),
        "goes through the main server",
    ] {
        assert!(page.contains(says), "{says:?} not in {page}");
    }
    for offer in [
        "id=\"deploy-form\"",
        "data-action=\"reload\"",
        "data-action=\"stop\"",
        "data-action=\"delete\"",
        "Workers are off",
        "not applied",
    ] {
        assert!(!page.contains(offer), "{offer:?} in {page}");
    }
    let (code, page) = send_text(worker("/console")).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("id=\"worker-note\""), "{page}");
    assert!(!page.contains("id=\"upload-form\""), "{page}");
    let (code, page) = send_text(worker("/console/jobs")).await;
    assert_eq!(code, 200, "{page}");
    assert!(!page.contains("/console/fragments/jobs"), "{page}");
    let (code, fragment) = send_text(worker("/console/fragments/models/iris")).await;
    assert_eq!(code, 200, "{fragment}");
    assert!(!fragment.contains("not applied"), "{fragment}");
    for applied in [
        "500m (enforced",
        "256Mi (enforced",
        "2 s (enforced",
        "staging",
    ] {
        assert!(fragment.contains(applied), "{applied:?} not in {fragment}");
    }

    // Its registry routes name the main server's registry.
    for path in ["/registry/services", "/registry/services/iris"] {
        let (code, body) = get(worker(path)).await;
        assert_eq!(code, 404, "{path}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("model \"iris\"'s worker process")
                && message.contains(&format!("{main_url}/registry/services"))
                && !message.contains("--worker-ports off"),
            "{path}: {body}"
        );
    }

    // The main server's own console still offers what it takes.
    let (code, page) = send_text(server.url("/console/models/iris")).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("id=\"deploy-form\""), "{page}");
    assert!(!page.contains("worker-note"), "{page}");
}

/// A main server killed before it moved its worker's records left them in the
/// worker's state directory; restarted with the worker on another port (the old one
/// taken), nothing read that directory again: the records were stranded for good.
/// At start, every state directory no restored deployment claims has its records
/// moved into the main store and goes; one whose store cannot be read stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_workers_records_reach_the_main_store_at_the_next_start() {
    let (_dir, repo) = scoring_repo();
    log_every_prediction(&repo);
    let ports = port_range(20);
    let server = start_server(&repo, ports, &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let port = answer["port"].as_u64().unwrap();
    for row in [
        [5.1, 3.5, 1.4, 0.2],
        [6.2, 2.9, 4.3, 1.3],
        [7.7, 3.0, 6.1, 2.3],
    ] {
        let (code, body) = post(
            server.url("/v1/models/iris:predict"),
            &json!({"instances": [row]}),
        )
        .await;
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(wait_logged(&server, 3).await.len(), 3, "{}", server.log());
    kill9(u64::from(server.pid()));
    assert_gone(
        &[u64::from(server.pid()), pid_of(&answer)],
        Duration::from_secs(10),
    );
    drop(server);

    // What a kill before the harvest leaves: the rows in the worker's store, none
    // in the main one (moved back, as they were before the harvest).
    let old_dir = repo.join(format!(".ferroserve/workers/iris-{port}"));
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", old_dir.join("worker.db").display());
        let mut worker = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let main = repo.join(".ferroserve/ferroserve.db");
        sqlx::query("ATTACH DATABASE ? AS main_store")
            .bind(main.display().to_string())
            .execute(&mut worker)
            .await
            .unwrap();
        sqlx::query("INSERT INTO predictions SELECT * FROM main_store.predictions")
            .execute(&mut worker)
            .await
            .unwrap();
        sqlx::query("DELETE FROM main_store.predictions")
            .execute(&mut worker)
            .await
            .unwrap();
        worker.close().await.unwrap();
    }
    // A former worker's directory whose store cannot be read, and one with none.
    let unreadable = repo.join(".ferroserve/workers/other-1");
    std::fs::create_dir_all(&unreadable).unwrap();
    std::fs::write(
        unreadable.join("worker.db"),
        b"not a database at all, not one page",
    )
    .unwrap();
    let empty = repo.join(".ferroserve/workers/other-2");
    std::fs::create_dir_all(&empty).unwrap();

    // The old port is taken: the worker comes back elsewhere.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port as u16)).unwrap();
    let server = start_server(&repo, ports, &[]).await;
    let entry = wait_registry(&server, "iris", Duration::from_secs(30), |e| {
        e["state"] == "ready"
    })
    .await;
    assert_ne!(entry["port"].as_u64(), Some(port), "{entry}");
    let rows = wait_logged(&server, 3).await;
    assert_eq!(rows.len(), 3, "{rows:?}\n{}", server.log());
    assert_eq!(rows[2]["inputs"]["input"], json!([[7.7, 3.0, 6.1, 2.3]]));
    assert!(!old_dir.exists(), "{}", server.log());
    assert!(!empty.exists());
    assert!(unreadable.join("worker.db").is_file());
    // The restored worker keeps its own directory.
    let new_dir = repo.join(format!(
        ".ferroserve/workers/iris-{}",
        entry["port"].as_u64().unwrap()
    ));
    assert!(new_dir.join("worker.db").is_file());
    let pid = pid_of(&entry);
    drop(server);
    assert_gone(&[pid], Duration::from_secs(10));
}

/// The inference requests for a deployed model that the main server answers itself
/// because its worker cannot (stopped, then killed for failing its health checks,
/// then restarting) are counted by the main server, once each, under the model's
/// name with outcome `unavailable`, over REST (the predict fast path and the
/// router's `POST /predict`) and gRPC; a request the worker answered is counted by
/// the worker alone. They were counted nowhere: exactly the outage went missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_deployed_models_worker_did_not_answer_are_counted_by_the_main_server() {
    use ferroserve_proto::tensorflow as tf;
    use ferroserve_proto::tensorflow::serving as tfs;
    use tfs::prediction_service_client::PredictionServiceClient;

    const PROTOCOLS: [&str; 2] = ["simple_rest", "tfs_grpc"];
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let (server, grpc_port) = start_server_with_grpc(repo.path(), port_range(20), &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);
    let worker = format!("http://127.0.0.1:{}", answer["port"].as_u64().unwrap());
    let mut grpc = PredictionServiceClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .unwrap();
    let grpc_request = || tfs::PredictRequest {
        model_spec: Some(tfs::ModelSpec {
            name: "iris".into(),
            ..Default::default()
        }),
        inputs: std::collections::HashMap::from([(
            "input".to_string(),
            tf::TensorProto {
                dtype: tf::DataType::DtFloat as i32,
                tensor_shape: Some(tf::TensorShapeProto {
                    dim: [1, 4]
                        .iter()
                        .map(|&size| tf::tensor_shape_proto::Dim {
                            size,
                            name: String::new(),
                        })
                        .collect(),
                    unknown_rank: false,
                }),
                float_val: ROW.iter().map(|&v| v as f32).collect(),
                ..Default::default()
            },
        )]),
        output_filter: vec![],
    };
    // The fast path's `/predict/iris` (path-named) and the router's `/predict`.
    let simple = |i: usize| {
        let client = reqwest::Client::new();
        if i.is_multiple_of(2) {
            client
                .post(server.url("/predict/iris"))
                .json(&json!({"features": ROW}))
        } else {
            client
                .post(server.url("/predict"))
                .json(&json!({"model_id": "iris", "features": ROW}))
        }
    };
    // (requests_total, duration count, outcome="unavailable", outcome="ok") of
    // model="iris" under `protocol` at `base`.
    let counts = |base: String, protocol: &'static str| async move {
        let (code, text) = send_text(format!("{base}/metrics")).await;
        assert_eq!(code, 200, "{text}");
        let model = [("model", "iris"), ("protocol", protocol)];
        let with = |outcome| [model[0], model[1], ("outcome", outcome)];
        [
            common::metric_value(&text, "ferroserve_requests_total", &model),
            common::metric_value(&text, "ferroserve_request_duration_seconds_count", &model),
            common::metric_value(&text, "ferroserve_requests_total", &with("unavailable")),
            common::metric_value(&text, "ferroserve_requests_total", &with("ok")),
        ]
    };

    // Answered by the worker: counted there once, not here.
    for i in 0..2 {
        let (code, body) = send(simple(i)).await;
        assert_eq!(code, 200, "{body}");
    }
    grpc.predict(grpc_request()).await.unwrap();
    assert_eq!(
        counts(worker.clone(), "simple_rest").await,
        [2.0, 2.0, 0.0, 2.0]
    );
    assert_eq!(
        counts(worker.clone(), "tfs_grpc").await,
        [1.0, 1.0, 0.0, 1.0]
    );
    for protocol in PROTOCOLS {
        assert_eq!(
            counts(server.url(""), protocol).await,
            [0.0; 4],
            "{protocol}"
        );
    }

    // A stopped worker: the requests in flight wait until it is killed for failing
    // its health checks (503 / UNAVAILABLE: it ended while answering), and those
    // after are refused while it restarts, until it answers again.
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let mut hung = grpc.clone();
    let (hung_rest, hung_router, hung_grpc) = tokio::join!(
        send(simple(0)),
        send(simple(1)),
        hung.predict(grpc_request())
    );
    assert_eq!(hung_rest.0, 503, "{}", hung_rest.1);
    assert_eq!(hung_router.0, 503, "{}", hung_router.1);
    let status = hung_grpc.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let mut refused = [2.0, 1.0];
    let mut answered = [false, false];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while answered != [true, true] {
        assert!(
            Instant::now() < deadline,
            "the worker never answered again\n{}",
            server.log()
        );
        if !answered[0] {
            let (code, body) = send(simple(i)).await;
            match code {
                200 => answered[0] = true,
                503 => refused[0] += 1.0,
                _ => panic!("{code} {body}"),
            }
            i += 1;
        }
        if !answered[1] {
            match grpc.predict(grpc_request()).await {
                Ok(_) => answered[1] = true,
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                    refused[1] += 1.0;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(pid_of(&registry(&server, "iris").await), pid);
    for (protocol, refused) in PROTOCOLS.into_iter().zip(refused) {
        assert_eq!(
            counts(server.url(""), protocol).await,
            [refused, refused, refused, 0.0],
            "{protocol}: the main server counts exactly its own {refused} refusals"
        );
        // The new worker counts what it answered: the one request that got through.
        assert_eq!(
            counts(worker.clone(), protocol).await,
            [1.0, 1.0, 0.0, 1.0],
            "{protocol}"
        );
    }
}
