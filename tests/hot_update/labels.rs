//! Labels moving under load, TF Serving's `model_config_list` (a broken edit keeps
//! the old), and version policies: a label whose version is unloaded, versions a
//! specific policy names that are missing.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn labels_move_under_load_and_refuse_unavailable_versions() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "m", 1, &model_file(1));
    install_model(repo.path(), "m", 2, &model_file(2));
    let config = repo.path().join("m/config.toml");
    write_atomically(&config, "version_policy = \"all\"\n[labels]\nstable = 1\n");
    let server = TestServer::start_with(watched(repo.path())).await;
    let by_label = json!({"model_id": "m", "features": ROW, "version": "stable"});
    let (code, body) = server.post_json("/predict", &by_label).await;
    assert_eq!((code, body["version"].clone()), (200, json!(1)), "{body}");

    let url = server.url("/predict");
    let request = by_label.clone();
    let load = Load::start(4, move |c| c.post(&url).json(&request), simple_version);
    // Answers through the label's first version before it moves: on a busy machine
    // the watcher can see the edit before the load has sent anything.
    eventually_some(
        "requests through the label",
        Duration::from_secs(20),
        || {
            let answers = load.answers.clone();
            async move { (answers.lock().unwrap().len() >= 20).then_some(()) }
        },
    )
    .await;
    write_atomically(&config, "version_policy = \"all\"\n[labels]\nstable = 2\n");
    eventually_some(
        "stable to point at version 2",
        Duration::from_secs(20),
        || {
            let server = &server;
            async move {
                let m = model_status(server, "m").await?;
                (m["labels"]["stable"] == 2).then_some(())
            }
        },
    )
    .await;
    let switches = vec![(Instant::now(), 2)];
    // Let the load run on the new label a little before stopping it.
    eventually_some(
        "requests through the moved label",
        Duration::from_secs(20),
        || {
            let answers = load.answers.clone();
            let at = switches[0].0;
            async move {
                let n = answers
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|a| a.sent > at)
                    .count();
                (n >= 20).then_some(())
            }
        },
    )
    .await;
    let answers = load.finish().await;
    check_answers(&answers, &switches, 40);
    assert!(
        answers.iter().any(|a| a.version == Some(1)),
        "the label served 1 first"
    );

    // A label on a version that is not available is refused; stable stays at 2.
    write_atomically(&config, "version_policy = \"all\"\n[labels]\nstable = 7\n");
    let m = eventually_some("the refused label", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "m").await?;
            (!m["label_errors"].as_array()?.is_empty()).then_some(m)
        }
    })
    .await;
    assert!(
        m["label_errors"][0].as_str().unwrap().contains("stable"),
        "{m}"
    );
    assert_eq!(m["labels"]["stable"], 2, "{m}");
    let (code, body) = server.post_json("/predict", &by_label).await;
    assert_eq!((code, body["version"].clone()), (200, json!(2)), "{body}");

    // Unless the model allows it: then requests through the label are UNAVAILABLE.
    write_atomically(
        &config,
        "version_policy = \"all\"\nallow_unavailable_labels = true\n[labels]\nstable = 7\n",
    );
    eventually_some("the allowed label", Duration::from_secs(20), || {
        let server = &server;
        let by_label = &by_label;
        async move { (server.post_json("/predict", by_label).await.0 == 503).then_some(()) }
    })
    .await;

    // A config that does not parse keeps the one in force.
    write_atomically(&config, "version_policy = [[[ not toml");
    let m = eventually_some("the config error", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "m").await?;
            m["config_error"].is_string().then_some(m)
        }
    })
    .await;
    assert_eq!(m["served_versions"], json!([1, 2]), "{m}");
    assert_eq!(m["labels"]["stable"], 7, "{m}");
    server.stop().await;
}

const TFS_CONFIG: &str = r#"
model_config_list {
  config {
    name: "iris"
    base_path: "BASE"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 } }
    version_labels { key: "stable" value: 1 }
  }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_model_config_list_is_honoured_and_a_broken_one_keeps_the_old() {
    let models = tempfile::tempdir().unwrap();
    install_model(models.path(), "somewhere", 1, &model_file(1));
    install_model(models.path(), "somewhere", 2, &model_file(2));
    install_model(models.path(), "unlisted", 1, &model_file(1));
    let base = models.path().join("somewhere");
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("models.config");
    let text = TFS_CONFIG.replace("BASE", &base.display().to_string());
    write_atomically(&config, &text);
    let settings = Settings {
        model_config_file: Some(config.clone()),
        model_config_file_poll_wait: POLL,
        ..watched(models.path())
    };
    let server = TestServer::start_with(settings).await;

    // Only the listed model is served, with the listed policy and label.
    let m = model_status(&server, "iris").await.unwrap();
    assert_eq!(m["served_versions"], json!([1]), "{m}");
    assert_eq!(m["source"], "config_file");
    assert!(model_status(&server, "unlisted").await.is_none());
    assert_eq!(server.get("/v1/models/unlisted").await.0, 404);
    let by_label = json!({"model_id": "iris", "features": ROW, "version": "stable"});
    let (code, body) = server.post_json("/predict", &by_label).await;
    assert_eq!((code, body["version"].clone()), (200, json!(1)), "{body}");

    // The file changes: both versions, stable moves to 2.
    let text2 = text
        .replace("versions: 1 }", "versions: 1 versions: 2 }")
        .replace("value: 1", "value: 2");
    write_atomically(&config, &text2);
    eventually_some("the new config", Duration::from_secs(20), || {
        let server = &server;
        let by_label = &by_label;
        async move {
            let (_, body) = server.post_json("/predict", by_label).await;
            (body["version"] == 2).then_some(())
        }
    })
    .await;
    assert_eq!(served_versions(&server, "iris").await, vec![1, 2]);

    // A broken file is refused; the list in force stays. Watched for many polls.
    write_atomically(
        &config,
        "model_config_list { config { name: \"iris\" colour: 1 } }",
    );
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert_eq!(served_versions(&server, "iris").await, vec![1, 2]);
        let (_, body) = server.post_json("/predict", &by_label).await;
        assert_eq!(body["version"], 2, "{body}");
        tokio::time::sleep(POLL).await;
    }
    server.stop().await;
}

/// A label config.toml declares whose version the policy stops serving (a newer
/// version arrived under `latest 1`) stays declared: requests through it are
/// UNAVAILABLE naming the label, its version and why, status says it, and it works
/// again once its version is served, with no change to the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_whose_version_the_policy_unloads_is_unavailable_not_unknown() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "lb", 1, &model_file(1));
    std::fs::write(repo.path().join("lb/config.toml"), "[labels]\nstable = 1\n").unwrap();
    let server = TestServer::start_with(watched(repo.path())).await;
    let body = json!({"instances": [ROW]});
    let by_label = "/v1/models/lb/labels/stable:predict";
    let (code, answer) = server.post_json(by_label, &body).await;
    assert_eq!(code, 200, "{answer}");

    add_version_atomically(repo.path(), "lb", 2, &model_file(2));
    eventually_some("version 2 alone served", Duration::from_secs(20), || {
        let server = &server;
        async move { (served_versions(server, "lb").await == [2]).then_some(()) }
    })
    .await;
    let (code, answer) = server.post_json(by_label, &body).await;
    assert_eq!(code, 503, "{answer}");
    let error = answer["error"].as_str().unwrap();
    for part in ["\"stable\"", "version 1", "version policy (latest 1)"] {
        assert!(error.contains(part), "{part} not in {error}");
    }
    // The label's status says the same (it was 404 "has no label").
    let (code, answer) = server.get("/v1/models/lb/labels/stable").await;
    assert_eq!(code, 503, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("version 1"),
        "{answer}"
    );
    let m = model_status(&server, "lb").await.unwrap();
    let label_error = m["label_errors"][0].as_str().unwrap_or_default();
    assert!(label_error.contains("version 1"), "{m}");

    // Version 2 goes: version 1 is served again, and so is the label.
    std::fs::rename(repo.path().join("lb/2"), repo.path().join("lb/.tmp-gone")).unwrap();
    eventually_some("the label to work again", Duration::from_secs(20), || {
        let (server, body) = (&server, &body);
        async move { (server.post_json(by_label, body).await.0 == 200).then_some(()) }
    })
    .await;
    let m = model_status(&server, "lb").await.unwrap();
    assert_eq!(m["labels"]["stable"], 1, "{m}");
    assert_eq!(m["label_errors"], json!([]), "{m}");
    server.stop().await;
}

/// A version policy naming versions that are not on disk says so in status, and when
/// it selects none of the versions on disk it serves none (as TF Serving does: the
/// versions served before are unloaded) and requests are told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_specific_policy_naming_missing_versions_is_reported() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "pa", 1, &model_file(1));
    install_model(repo.path(), "pa", 2, &model_file(2));
    install_model(repo.path(), "pb", 1, &model_file(1));
    std::fs::write(
        repo.path().join("pb/config.toml"),
        "version_policy = { specific = [7] }\n",
    )
    .unwrap();
    let server = TestServer::start_with(watched(repo.path())).await;
    let body = json!({"instances": [ROW]});
    assert_eq!(served_versions(&server, "pa").await, [2]);

    // A fresh model: nothing served, and the answer says why.
    let (code, answer) = server.post_json("/v1/models/pb:predict", &body).await;
    assert_eq!(code, 503, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("[7]") && error.contains("serves none of the versions on disk ([1])"),
        "{error}"
    );
    let m = model_status(&server, "pb").await.unwrap();
    assert!(m["policy_warning"].as_str().unwrap().contains("[7]"), "{m}");

    // A served model whose policy comes to name only missing versions stops serving.
    write_atomically(
        &repo.path().join("pa/config.toml"),
        "version_policy = { specific = [7] }\n",
    );
    let m = eventually_some("the policy warning", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "pa").await?;
            (m["policy_warning"].is_string() && m["served_versions"] == json!([])).then_some(m)
        }
    })
    .await;
    let warning = m["policy_warning"].as_str().unwrap();
    assert!(warning.contains("[7]") && warning.contains("[1, 2]"), "{m}");
    let (code, answer) = server.post_json("/v1/models/pa:predict", &body).await;
    assert_eq!(code, 503, "{answer}");

    // Some named versions missing: the others serve, and status names the missing.
    write_atomically(
        &repo.path().join("pa/config.toml"),
        "version_policy = { specific = [1, 7] }\n",
    );
    let m = eventually_some("version 1 served", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "pa").await?;
            (m["served_versions"] == json!([1])).then_some(m)
        }
    })
    .await;
    assert!(m["policy_warning"].as_str().unwrap().contains("[7]"), "{m}");
    server.stop().await;
}
