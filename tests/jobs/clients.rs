//! The old service's routes, the CLI, and the audit trail of submissions and cancels.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_predictall_and_training_status_routes() {
    let env = env();
    write_csv(&env.data.join("new.csv"), &iris_rows(40));
    // A served ONNX classifier (its graph names its classes 0, 1 and 2): POST
    // /predict/ answers its probabilities by class, as classify does.
    install_model(
        &env.repo,
        "iris_onnx",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    std::fs::write(
        env.repo.join("iris_onnx/config.toml"),
        format!("feature_names = {:?}\n", FEATURES),
    )
    .unwrap();
    let server = TestServer::start_with(settings(&env)).await;
    let record: serde_json::Map<String, Value> = FEATURES
        .iter()
        .zip([5.1, 3.5, 1.4, 0.2])
        .map(|(f, v)| (f.to_string(), json!(v)))
        .collect();
    let (status, answer) = server
        .post_json(
            "/predict/",
            &json!({"modelkey": "iris_onnx", "record": record}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let probabilities = answer["probabilities"].as_object().unwrap();
    assert_eq!(
        probabilities.keys().collect::<Vec<_>>(),
        ["0", "1", "2"],
        "{answer}"
    );
    assert!(probabilities["0"].as_f64().unwrap() > 0.9, "{answer}");
    let (status, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": "iris", "inputCollection": "new.csv", "outputCollection": "scored.csv", "carry": ["id"]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, s) = server.get(&format!("/training/status/{id}")).await;
        assert_eq!(status, 200, "{s}");
        let state = s["status"].as_str().unwrap();
        assert!(["PENDING", "PROGRESS", "SUCCESS"].contains(&state), "{s}");
        if state == "SUCCESS" {
            assert!(s["message"].as_str().unwrap().contains("40 rows"), "{s}");
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(env.data.join("scored.csv").is_file());
    // A database URL as inputCollection is read with inputQuery, as /train/ reads
    // it: new.csv's rows, written to SQLite by /predictall/ itself, score alike.
    let carry: Vec<&str> = std::iter::once("id").chain(FEATURES).collect();
    let (status, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": "iris", "inputCollection": "new.csv",
                    "outputCollection": "sqlite://new.db", "outputTable": "src", "carry": carry}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let job = finished(&server, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let (status, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": "iris", "inputCollection": "sqlite://new.db",
                    "inputQuery": "SELECT * FROM src",
                    "outputCollection": "from_db.csv", "carry": ["id"]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let job = finished(&server, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["spec"]["source"],
        json!({"url": "sqlite://new.db", "query": "SELECT * FROM src"}),
        "{job}"
    );
    assert_eq!(
        std::fs::read_to_string(env.data.join("from_db.csv")).unwrap(),
        std::fs::read_to_string(env.data.join("scored.csv")).unwrap()
    );
    // A query beside a file would go unread, and a database URL needs one.
    for (job, expected) in [
        (
            json!({"modelkey": "iris", "inputCollection": "new.csv", "inputQuery": "SELECT 1", "outputCollection": "x.csv"}),
            "inputQuery: is only for a database URL",
        ),
        (
            json!({"modelkey": "iris", "inputCollection": "sqlite://new.db", "outputCollection": "x.csv"}),
            "inputQuery: missing",
        ),
    ] {
        let (status, answer) = server.post_json("/predictall/", &job).await;
        assert_error(status, &answer, 400, expected);
    }
    // A failure says why.
    let (_, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": "iris", "inputCollection": "new.csv", "outputCollection": "x.csv", "carry": ["no_such"]}),
        )
        .await;
    let id = answer["job_id"].as_str().unwrap().to_string();
    finished(&server, &id).await;
    let (_, s) = server.get(&format!("/training/status/{id}")).await;
    assert_eq!(s["status"], "FAILURE", "{s}");
    assert!(s["message"].as_str().unwrap().contains("no_such"), "{s}");
    // MongoDB collections are refused with a clear message.
    let (status, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": "iris", "inputCollection": "mongodb://localhost/bank.new", "outputCollection": "x.csv"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("MongoDB is not supported"));
    let (status, _) = server.get("/training/status/unknown").await;
    assert_eq!(status, 404);
    // The OpenAPI document lists what /predictall/ answers for a training job's
    // modelkey: 404 (its version is served no more), 409 (it saved no model).
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    let responses = &doc["paths"]["/predictall"]["post"]["responses"];
    for code in ["200", "400", "404", "409", "503"] {
        assert!(responses.get(code).is_some(), "{code}: {responses}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_watch_exits_by_the_job_outcome() {
    let env = env();
    write_csv(&env.data.join("in.csv"), &iris_rows(50));
    std::fs::write(
        env.data.join("bad.csv"),
        format!("id,{}\nx,1,2,three,4\n", FEATURES.join(",")),
    )
    .unwrap();
    let server = TestServer::start_with(settings(&env)).await;
    let specs = env.state.join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let good = specs.join("good.json");
    std::fs::write(
        &good,
        score_spec(json!({"path": "in.csv"}), json!({"path": "cli.csv"}), 16).to_string(),
    )
    .unwrap();
    let bad = specs.join("bad.json");
    std::fs::write(
        &bad,
        score_spec(
            json!({"path": "bad.csv"}),
            json!({"path": "cli_bad.csv"}),
            16,
        )
        .to_string(),
    )
    .unwrap();
    let cli = |spec: &Path| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
            .args(["jobs", "submit"])
            .arg(spec)
            .args(["--watch", "--url", &server.base])
            .output()
    };
    let out = cli(&good).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.data.join("cli.csv").is_file());
    let out = cli(&bad).await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a number"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // list and status work against the same server.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(["jobs", "list", "--url", &server.base])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    server.stop().await;
}

/// Submitting and cancelling a job is in the model's audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_submissions_and_cancels_are_audited() {
    let env = env();
    write_csv(&env.data.join("small.csv"), &iris_rows(20));
    let server = TestServer::start_with(settings(&env)).await;
    let id = submit(&server, slow_job(&env, "slow.csv")).await;
    let (status, job) = server
        .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{job}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, history) = server.get("/v1/models/iris/history").await;
        assert_eq!(status, 200, "{history}");
        let kinds: Vec<(String, String)> = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["detail"]["job_id"] == id.as_str())
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["detail"]["kind"].to_string(),
                )
            })
            .collect();
        if kinds.len() == 2 {
            assert!(
                kinds.contains(&("job_submit".into(), "\"score\"".into())),
                "{kinds:?}"
            );
            assert!(
                kinds.contains(&("job_cancel".into(), "\"score\"".into())),
                "{kinds:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{history}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}
