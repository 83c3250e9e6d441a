//! Versions swapping under load with no failed request, unloading that waits for
//! the request holding the old version, a corrupt version leaving the old one
//! serving, and reloads of files changed in place.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_swap_under_load_without_a_failed_request() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "m", 1, &model_file(1));
    let server = TestServer::start_with(watched(repo.path())).await;
    let url = server.url("/v2/models/m/infer");
    let load = Load::start(4, move |c| c.post(&url).json(&v2_infer_body()), v2_version);

    let mut switches = Vec::new();
    for v in 2..=21 {
        add_version_atomically(repo.path(), "m", v, &model_file(v));
        eventually_some(
            &format!("version {v} to replace {}", v - 1),
            Duration::from_secs(20),
            || {
                let server = &server;
                async move { (served_versions(server, "m").await == vec![v]).then_some(()) }
            },
        )
        .await;
        switches.push((Instant::now(), v));
        std::fs::remove_dir_all(repo.path().join("m").join((v - 1).to_string())).unwrap();
    }
    let answers = load.finish().await;
    check_answers(&answers, &switches, 100);
    let status = model_status(&server, "m").await.unwrap();
    assert_eq!(version_state(&status, 21).as_deref(), Some("AVAILABLE"));
    assert!(
        status["versions"].as_array().unwrap().len() <= 3,
        "ended versions that left the disk are forgotten: {status}"
    );
    server.stop().await;
}

#[test]
fn unloading_waits_for_the_request_that_holds_the_old_version() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "m", 1, &model_file(1));
    let manager = one_thread_manager();
    let sources = Sources::new(manager.clone(), repo.path().to_path_buf());
    sources.initial_load();
    let held = manager.resolve("m", &VersionRequest::Latest).unwrap();
    assert_eq!(held.version, 1);

    install_model(repo.path(), "m", 2, &model_file(2));
    sources.reload_model("m").unwrap();
    assert_eq!(
        manager
            .resolve("m", &VersionRequest::Latest)
            .unwrap()
            .version,
        2,
        "version 2 takes over"
    );
    let state = |v| manager.model_record("m").unwrap().versions[&v].state;
    assert_eq!(state(1), VersionState::Unloading, "held, so not freed yet");
    // The request holding version 1 still runs on version 1.
    let inputs = ferroserve::warmup::synthetic_inputs(held.backend.signature()).unwrap();
    let outputs = held.backend.predict(inputs, &[]).unwrap();
    assert!(!outputs.is_empty());
    assert_eq!(held.version, 1);
    drop(held);
    assert_eq!(
        state(1),
        VersionState::End,
        "freed when the last holder finished"
    );
    assert_eq!(state(2), VersionState::Available);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_version_goes_to_error_and_the_old_one_keeps_serving() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "m", 1, &model_file(1));
    let server = TestServer::start_with(watched(repo.path())).await;
    let staging = repo.path().join("m/.tmp-bad");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), b"this is not an onnx model").unwrap();
    std::fs::rename(&staging, repo.path().join("m/2")).unwrap();

    let status = eventually_some("version 2 to fail", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "m").await?;
            (version_state(&m, 2).as_deref() == Some("ERROR")).then_some(m)
        }
    })
    .await;
    let v2 = &status["versions"][0];
    assert_eq!(v2["version"], 2);
    assert!(!v2["error"].as_str().unwrap().is_empty(), "{status}");
    assert_eq!(version_state(&status, 1).as_deref(), Some("AVAILABLE"));
    assert_eq!(status["served_versions"], json!([1]));
    let (code, body) = server
        .post_json("/v2/models/m/infer", &v2_infer_body())
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["model_version"], "1");
    server.stop().await;
}

/// An explicit reload loads again a served version whose files were replaced in
/// place (a different model moved over its file), and keeps one whose files did not
/// change; a request that holds the old load finishes on it.
#[test]
fn an_explicit_reload_loads_again_a_version_whose_files_changed() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "rf", 1, &model_file(1));
    let manager = one_thread_manager();
    let sources = Sources::new(manager.clone(), repo.path().to_path_buf());
    sources.initial_load();
    let first = manager.resolve("rf", &VersionRequest::Latest).unwrap();

    sources.reload_model("rf").unwrap();
    let again = manager.resolve("rf", &VersionRequest::Latest).unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "unchanged files: not loaded again"
    );
    drop(again);

    let file = repo.path().join("rf/1/model.onnx");
    let tmp = repo.path().join("rf/1/x.tmp");
    std::fs::copy(model_file(2), &tmp).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    sources.reload_model("rf").unwrap();
    let reloaded = manager.resolve("rf", &VersionRequest::Latest).unwrap();
    assert!(
        !Arc::ptr_eq(&first, &reloaded),
        "changed files: loaded again"
    );
    assert_eq!(reloaded.version, 1);
    let record = manager.model_record("rf").unwrap();
    assert_eq!(record.versions[&1].state, VersionState::Available);
    assert_eq!(record.versions[&1].error, None);
    // The two loads are different models (iris_lr and iris_dt), and the old one,
    // still held, still answers.
    let inputs = ferroserve::warmup::synthetic_inputs(first.backend.signature()).unwrap();
    assert!(!first.backend.predict(inputs, &[]).unwrap().is_empty());
    assert_ne!(
        std::fs::read(model_file(1)).unwrap(),
        std::fs::read(&file).unwrap()
    );
    drop(first);
    assert_eq!(
        manager.model_record("rf").unwrap().versions[&1].state,
        VersionState::Available,
        "freeing the old load leaves the version available"
    );

    // Reload of every model does the same.
    let held = reloaded;
    std::fs::copy(model_file(1), &tmp).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let _ = sources.reload_all(&Default::default());
    let latest = manager.resolve("rf", &VersionRequest::Latest).unwrap();
    assert!(!Arc::ptr_eq(&held, &latest), "reload-all: loaded again");
}

/// Over REST: `POST /reload_model` (one model, and all) serves the replaced file's
/// answers at once; requests sent meanwhile all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_model_serves_a_version_file_replaced_in_place() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "rf", 1, &model_file(1));
    let server = TestServer::start_with(Settings {
        file_system_poll_wait: Duration::ZERO,
        ..test_settings(repo.path())
    })
    .await;
    let row = json!({"instances": [[5.9, 3.0, 4.2, 1.5]]});
    let predict = || {
        let (server, row) = (&server, &row);
        async move {
            let (code, body) = server
                .post_json("/v1/models/rf/versions/1:predict", row)
                .await;
            assert_eq!(code, 200, "{body}");
            body["predictions"].clone()
        }
    };
    let before = predict().await;
    let url = server.url("/v1/models/rf/versions/1:predict");
    let request = row.clone();
    let load = Load::start(2, move |c| c.post(&url).json(&request), |_| Some(1));

    let file = repo.path().join("rf/1/model.onnx");
    let tmp = repo.path().join("rf/1/x.tmp");
    for (path, artifact) in [("/reload_model?modelname=rf", 2), ("/reload_model", 1)] {
        std::fs::copy(model_file(artifact), &tmp).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let (code, body) = server.post_json(path, &json!({})).await;
        assert_eq!(code, 200, "{body}");
        let now = predict().await;
        assert_eq!(now != before, artifact == 2, "{path}: {now} vs {before}");
    }
    let answers = load.finish().await;
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(failed.is_empty(), "failed during the swaps: {failed:?}");
    assert!(!answers.is_empty(), "the load did not run");
    server.stop().await;
}
