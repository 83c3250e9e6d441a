//! What a changed model never answers from: a new version, other weights under a
//! reused number, other answer settings, replaced files; and settings edited live.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_never_answers_from_the_old_ones_entries() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "versioned", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "versioned", CACHE_ON);
    let server = TestServer::start_with(settings(repo.path())).await;
    // Iris-versicolor-like: the two models disagree on its probabilities.
    let row = [6.0, 2.9, 4.5, 1.5];
    let v1 = v2_infer(&server, "versioned", row).await;
    assert_eq!(v1.cache.as_deref(), Some("miss"));
    assert_eq!(
        v2_infer(&server, "versioned", row).await.cache.as_deref(),
        Some("hit")
    );

    install_model(repo.path(), "versioned", 2, &root_path(IRIS_DT));
    // The first answer from version 2 is computed by version 2.
    let deadline = Instant::now() + Duration::from_secs(30);
    let v2 = loop {
        let a = v2_infer(&server, "versioned", row).await;
        if a.json()["model_version"] == "2" {
            break a;
        }
        assert!(Instant::now() < deadline, "version 2 never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(v2.cache.as_deref(), Some("miss"), "{:?}", v2.json());
    assert_ne!(
        v2.json()["outputs"],
        v1.json()["outputs"],
        "version 2 answers with its own model"
    );
    let again = v2_infer(&server, "versioned", row).await;
    assert_eq!(again.cache.as_deref(), Some("hit"));
    assert_eq!(again.body, v2.body);
    // The V2 statistics count the version's own hits and misses, not the model's.
    let stats = get(&server, "/v2/models/versioned/versions/2/stats")
        .await
        .json();
    let inference = &stats["model_stats"][0]["inference_stats"];
    assert_eq!(inference["cache_miss"]["count"], 1, "{stats}");
    assert_eq!(inference["cache_hit"]["count"], 1, "{stats}");
    server.stop().await;
}

/// A model deleted and put back with other weights under the same name and version
/// number is another model: the key holds the version's content fingerprint, so
/// the old entries never answer for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_weights_under_a_reused_version_number_never_answer_from_old_entries() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "reused", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "reused", CACHE_ON);
    let server = TestServer::start_with(settings(repo.path())).await;
    let row = [6.0, 2.9, 4.5, 1.5];
    let old = v2_infer(&server, "reused", row).await;
    assert_eq!(old.cache.as_deref(), Some("miss"));
    assert_eq!(
        v2_infer(&server, "reused", row).await.cache.as_deref(),
        Some("hit")
    );
    let r = server
        .client
        .delete(server.url("/delete_model/reused"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    install_model(repo.path(), "reused", 1, &root_path(IRIS_DT));
    write_config(repo.path(), "reused", CACHE_ON);
    let r = post(&server, "/reload_model?modelname=reused", &json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let new = v2_infer(&server, "reused", row).await;
    assert_eq!(new.status, 200);
    assert_eq!(new.cache.as_deref(), Some("miss"), "{:?}", new.json());
    assert_ne!(
        new.json()["outputs"],
        old.json()["outputs"],
        "the new weights answer, not the old entries"
    );
    server.stop().await;
}

/// Load-time settings that change answers (`[postprocess] softmax`, `[fasttext] k`)
/// are in the keys: the same version loaded again (V2 unload then load) with softmax
/// turned on answered its cached logits until they expired, and the other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_loaded_again_with_other_answer_settings_never_answers_from_old_entries() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "animals",
        1,
        &root_path("tests/fixtures/preprocess/logits/model.onnx"),
    );
    let server = TestServer::start_with(settings(repo.path())).await;
    let mut answers = Vec::new();
    // Back to the first settings, the first settings' entries answer again.
    for (softmax, first_answer) in [(false, "miss"), (true, "miss"), (false, "hit")] {
        write_config(
            repo.path(),
            "animals",
            &format!("{CACHE_ON}[postprocess]\nsoftmax = {softmax}\n"),
        );
        for verb in ["unload", "load"] {
            let r = post(
                &server,
                &format!("/v2/repository/models/animals/{verb}"),
                &json!({}),
            )
            .await;
            assert_eq!(r.status, 200, "{verb}: {:?}", r.json());
        }
        let first = v2_infer(&server, "animals", ROW).await;
        assert_eq!(first.status, 200, "{:?}", first.json());
        assert_eq!(
            first.cache.as_deref(),
            Some(first_answer),
            "softmax {softmax}"
        );
        let again = v2_infer(&server, "animals", ROW).await;
        assert_eq!(again.cache.as_deref(), Some("hit"), "softmax {softmax}");
        assert_eq!(again.body, first.body);
        let data: Vec<f64> = first.json()["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let sum: f64 = data.iter().sum();
        assert_eq!(
            (sum - 1.0).abs() < 1e-5,
            softmax,
            "softmax {softmax}: {data:?}"
        );
        answers.push(data);
    }
    assert_eq!(answers[0], answers[2]);
    server.stop().await;
}

/// `[cache]` turned on in a config.toml edit applies to the version already serving,
/// without a reload: its content fingerprint, not computed at load (the cache was
/// off), is computed in the background at the first request that finds the cache
/// on; answers are cached from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_turned_on_by_an_edit_applies_without_a_reload() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "later", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "later", "");
    let server = TestServer::start_with(settings(repo.path())).await;
    assert_eq!(tfs_predict(&server, "later", ROW).await.cache, None);
    write_config(repo.path(), "later", CACHE_ON);
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let a = tfs_predict(&server, "later", ROW).await;
        assert_eq!(a.status, 200);
        if a.cache.is_some() {
            break a;
        }
        assert!(Instant::now() < deadline, "the cache never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(first.cache.as_deref(), Some("miss"));
    let again = tfs_predict(&server, "later", ROW).await;
    assert_eq!(again.cache.as_deref(), Some("hit"));
    assert_eq!(again.body, first.body);
    server.stop().await;
}

/// A version's fingerprint describes the files it loaded: files replaced in place
/// after the load (which only an explicit reload loads) leave a cache turned on
/// later off for that version. Its fingerprint was read from the new files, so the
/// old model's answers were keyed as the new one's, and after the reload the new
/// model answered a logistic regression's probabilities from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_replaced_after_the_load_never_key_the_old_models_answers() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "swapped", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "swapped", "");
    install_model(repo.path(), "reference", 1, &root_path(IRIS_DT));
    let server = TestServer::start_with(settings(repo.path())).await;
    let row = [6.0, 2.9, 4.5, 1.5];
    let lr = v2_infer(&server, "swapped", row).await;
    std::fs::copy(root_path(IRIS_DT), repo.path().join("swapped/1/model.onnx")).unwrap();
    write_config(repo.path(), "swapped", CACHE_ON);
    // The edit applies (the config is polled); the version, still the logistic
    // regression, answers uncached.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..20 {
        let a = v2_infer(&server, "swapped", row).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.cache, None, "the old model's answer was cached");
        assert_eq!(a.json()["outputs"], lr.json()["outputs"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = post(&server, "/reload_model?modelname=swapped", &json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let dt = v2_infer(&server, "reference", row).await;
    let new = v2_infer(&server, "swapped", row).await;
    assert_eq!(new.cache.as_deref(), Some("miss"), "{:?}", new.json());
    assert_eq!(new.json()["outputs"], dt.json()["outputs"]);
    let again = v2_infer(&server, "swapped", row).await;
    assert_eq!(again.cache.as_deref(), Some("hit"));
    assert_eq!(again.body, new.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_settings_in_config_toml_apply_live_to_the_served_version() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "live_lr", 1, &root_path(IRIS_LR));
    let server = TestServer::start_with(settings(repo.path())).await;
    assert_eq!(tfs_predict(&server, "live_lr", ROW).await.cache, None);

    write_config(repo.path(), "live_lr", CACHE_ON);
    eventually(
        "[cache] enabled applies",
        Duration::from_secs(20),
        || async { tfs_predict(&server, "live_lr", ROW).await.cache.is_some() },
    )
    .await;
    let a = tfs_predict(&server, "live_lr", ROW).await;
    assert_eq!(a.cache.as_deref(), Some("hit"));
    let v2 = v2_infer(&server, "live_lr", ROW).await;
    assert_eq!(
        v2.json()["model_version"],
        "1",
        "the same version, no reload"
    );

    write_config(repo.path(), "live_lr", "[cache]\nenabled = false\n");
    eventually(
        "[cache] disabled applies",
        Duration::from_secs(20),
        || async { tfs_predict(&server, "live_lr", ROW).await.cache.is_none() },
    )
    .await;
    let before = model_runs(&server, "live_lr", 1).await;
    assert_eq!(tfs_predict(&server, "live_lr", ROW).await.cache, None);
    assert_eq!(
        model_runs(&server, "live_lr", 1).await,
        before + 1.0,
        "the backend runs"
    );
    server.stop().await;
}
