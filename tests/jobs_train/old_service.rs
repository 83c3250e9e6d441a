//! Training through the old prediction service's routes (`/train/`,
//! `/training/status/<id>`, `/predict/`, `/predictall/`).

use super::*;

/// The old prediction service's routes around a training job: `POST /train/` with
/// its job.json, `GET /training/status/<id>`, `POST /predict/` scoring one record
/// with the model that job trained, and `POST /predictall/` with the job's id as
/// `modelkey`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_services_routes_train_and_score_with_the_trained_model() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let job_json = json!({
        "schema": {"label": {"key": "y", "values": {"yes": 1, "no": 0}},
                   "features": [{"key": "age"}, {"key": "balance"}, {"key": "duration"},
                                {"key": "campaign"},
                                {"key": "marital", "values": {"married": 0, "single": 1, "divorced": 2}}]},
        "inputCollection": "bank.csv",
        "outputCollection": "models",
        "model": "bank_old",
        "algorithm": "LogisticRegression",
        "params": {"iterations": 500, "regType": "L2", "intercept": true, "regParam": [1.0, 10.0]},
        "numFolds": 3,
    });
    let (status, answer) = server.post_json("/train/", &job_json).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
    // The old status route: PENDING / PROGRESS, then SUCCESS naming the model.
    let deadline = Instant::now() + Duration::from_secs(300);
    let message = loop {
        let (status, s) = server.get(&format!("/training/status/{id}")).await;
        assert_eq!(status, 200, "{s}");
        match s["status"].as_str().unwrap() {
            "SUCCESS" => break s["message"].as_str().unwrap().to_string(),
            "PENDING" | "PROGRESS" => {}
            other => panic!("{other}: {s}"),
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(message.contains("model bank_old version 1"), "{message}");
    let job = finished(&server, &id).await;
    let result = &job["result"];
    // regParam λ became C = 1/λ; iterations became max_iter.
    assert_eq!(
        job["spec"]["algorithm"]["grid"]["C"],
        json!([1.0, 0.1]),
        "{job}"
    );
    assert_eq!(job["spec"]["algorithm"]["max_iter"], 500, "{job}");
    assert_eq!(
        result["cv_results"].as_array().unwrap().len(),
        2,
        "{result}"
    );

    // POST /predict/ with the first row of the data: the job's own answer for it,
    // the label mapped back to "yes"/"no".
    let (header, rows) = read_csv(&env.data.join("bank.csv"));
    let record: serde_json::Map<String, Value> = header
        .iter()
        .zip(&rows[0])
        .map(|(h, v)| {
            let value = v
                .parse::<f64>()
                .map(|n| json!(n))
                .unwrap_or_else(|_| json!(v));
            (h.clone(), value)
        })
        .collect();
    let (status, answer) = server
        .post_json(
            "/predict/",
            &json!({"modelkey": id, "record": record, "schema": job_json["schema"]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let own_label = &result["sample_predictions"]["labels"][0];
    let own_p = &result["sample_predictions"]["probabilities"][0];
    assert_eq!(&answer["label"], own_label, "{answer} vs {result}");
    let named = if own_label == 1 { "yes" } else { "no" };
    assert_eq!(answer["prediction"], named, "{answer}");
    assert_eq!(answer["version"], 1, "{answer}");
    let classes = result["classes"].as_array().unwrap();
    for (i, class) in classes.iter().enumerate() {
        let name = if class == 1 { "yes" } else { "no" };
        let p = answer["probabilities"][name]
            .as_f64()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(
            (p - own_p[i].as_f64().unwrap()).abs() < 1e-5,
            "{answer} vs {own_p}"
        );
    }
    // The served model's name as modelkey answers as its training job's id does:
    // the label mapped back through the version's training.json.
    let (status, by_name) = server
        .post_json(
            "/predict/",
            &json!({"modelkey": "bank_old", "record": record}),
        )
        .await;
    assert_eq!(status, 200, "{by_name}");
    assert_eq!(
        by_name["prediction"], answer["prediction"],
        "{by_name} vs {answer}"
    );
    assert_eq!(by_name["label"], answer["label"], "{by_name} vs {answer}");
    assert_eq!(
        by_name["probabilities"], answer["probabilities"],
        "{by_name} vs {answer}"
    );
    // A record without one of the model's features is a 400 naming it.
    let mut partial = record.clone();
    partial.remove("balance");
    let (status, answer) = server
        .post_json("/predict/", &json!({"modelkey": id, "record": partial}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("balance"),
        "{answer}"
    );
    let (status, _) = server
        .post_json(
            "/predict/",
            &json!({"modelkey": "no-such-job", "record": record}),
        )
        .await;
    assert_eq!(status, 404);

    // POST /predictall/ with the training job's id scores with the version it saved.
    let (status, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": id, "inputCollection": "bank.csv", "outputCollection": "scored.csv"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let scoring = finished(&server, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(scoring["state"], "succeeded", "{scoring}");
    assert_eq!(scoring["spec"]["model"], "bank_old", "{scoring}");
    assert_eq!(scoring["spec"]["version"], 1, "{scoring}");
    let (_, scored) = read_csv(&env.data.join("scored.csv"));
    assert_eq!(scored.len(), rows.len());

    // A training job that failed has no model to score with: 409 with its reason.
    let mut bad = job_json.clone();
    bad["schema"]["label"]["values"] = json!({"yes": 1});
    let (_, answer) = server.post_json("/train/", &bad).await;
    let bad_id = answer["job_id"].as_str().unwrap().to_string();
    let bad_job = finished(&server, &bad_id).await;
    assert_eq!(bad_job["state"], "failed", "{bad_job}");
    let (status, answer) = server
        .post_json("/predict/", &json!({"modelkey": bad_id, "record": record}))
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("failed"),
        "{answer}"
    );

    // A newer version replaces the one the job saved (the policy serves the newest):
    // its id is a 404 that says so, on both routes.
    copy_dir(&env.repo.join("bank_old/1"), &env.repo.join("bank_old/2"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = server.get("/v1/models/bank_old/versions/1").await;
        if status["model_version_status"][0]["state"] == "END" {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, answer) = server
        .post_json("/predict/", &json!({"modelkey": id, "record": record}))
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("is not served any more"),
        "{answer}"
    );
    let (status, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": id, "inputCollection": "bank.csv", "outputCollection": "late.csv"}),
        )
        .await;
    assert_eq!(status, 404, "{answer}");

    // Deleted and trained again, the model has a version 1 again, another job's:
    // the first job's id is a 404 naming that job (it scored with the new model),
    // and the new job's id scores with it.
    let (status, body) = status_and_body(
        server
            .client
            .delete(server.url("/delete_model/bank_old"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut again = job_json.clone();
    again["params"]["regParam"] = json!(0.5);
    let (status, answer) = server.post_json("/train/", &again).await;
    assert_eq!(status, 200, "{answer}");
    let new_id = answer["job_id"].as_str().unwrap().to_string();
    let new_job = finished(&server, &new_id).await;
    assert_eq!(new_job["state"], "succeeded", "{new_job}");
    assert_eq!(new_job["result"]["version"], 1, "{new_job}");
    let (status, answer) = server
        .post_json("/predict/", &json!({"modelkey": id, "record": record}))
        .await;
    assert_eq!(status, 404, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("is not served any more") && error.contains(&new_id),
        "{answer}"
    );
    let (status, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": id, "inputCollection": "bank.csv", "outputCollection": "old.csv"}),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(!env.data.join("old.csv").exists());
    let (status, answer) = server
        .post_json("/predict/", &json!({"modelkey": new_id, "record": record}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 1, "{answer}");
    let (status, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": new_id, "inputCollection": "bank.csv", "outputCollection": "new.csv"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let scoring = finished(&server, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(scoring["state"], "succeeded", "{scoring}");
    server.stop().await;
}
