//! What a worker's requests leave behind (scores, the prediction log, events,
//! metrics) reaches the main server.

use super::*;

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
