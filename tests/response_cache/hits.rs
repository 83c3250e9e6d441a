//! Hits on every protocol, equal to the miss bit for bit; what shares an entry and
//! what never does; second-miss admission; no cache, no header.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_equals_the_miss_bit_for_bit_on_every_protocol_and_skips_the_backend() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "hit_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "hit_lr", &format!("{FEATURES}{CACHE_ON}"));
    let server = TestServer::start_with(settings(repo.path())).await;

    // TF Serving REST.
    let miss = tfs_predict(&server, "hit_lr", ROW).await;
    assert_eq!(
        (miss.status, miss.cache.as_deref()),
        (200, Some("miss")),
        "{miss:?}"
    );
    let runs = model_runs(&server, "hit_lr", 1).await;
    let hit = tfs_predict(&server, "hit_lr", ROW).await;
    assert_eq!((hit.status, hit.cache.as_deref()), (200, Some("hit")));
    assert_eq!(hit.body, miss.body, "a hit is the miss, bit for bit");
    assert_eq!(
        model_runs(&server, "hit_lr", 1).await,
        runs,
        "a hit skips the backend"
    );

    // KServe V2 REST, JSON and binary outputs; the answer (the tensors) is shared with
    // the request above, as the model's inputs and outputs are the same.
    let other = [6.0, 2.9, 4.5, 1.5];
    let miss = v2_infer(&server, "hit_lr", other).await;
    assert_eq!(miss.cache.as_deref(), Some("miss"));
    let hit = v2_infer(&server, "hit_lr", other).await;
    assert_eq!(hit.cache.as_deref(), Some("hit"));
    assert_eq!(hit.body, miss.body);
    let mut binary = v2_body(other);
    binary["parameters"] = json!({ "binary_data_output": true });
    let binary_hit = post(&server, "/v2/models/hit_lr/infer", &binary).await;
    assert_eq!(
        binary_hit.cache.as_deref(),
        Some("hit"),
        "binary outputs encode the same tensors"
    );
    assert!(binary_hit.body.len() > 10 && binary_hit.body != hit.body);

    // Only some outputs: another entry. Every output in another order than the
    // model's: another entry too; in the model's order, the entry of naming none
    // (the request above), answered in the order asked.
    let mut one = v2_body(other);
    one["outputs"] = json!([{ "name": "probabilities" }]);
    assert_eq!(
        post(&server, "/v2/models/hit_lr/infer", &one)
            .await
            .cache
            .as_deref(),
        Some("miss")
    );
    let mut both = v2_body(other);
    both["outputs"] = json!([{ "name": "probabilities" }, { "name": "label" }]);
    let first = post(&server, "/v2/models/hit_lr/infer", &both).await;
    both["outputs"] = json!([{ "name": "label" }, { "name": "probabilities" }]);
    let swapped = post(&server, "/v2/models/hit_lr/infer", &both).await;
    assert_eq!(
        (first.cache.as_deref(), swapped.cache.as_deref()),
        (Some("miss"), Some("hit"))
    );
    let names = |a: &Answer| -> Vec<String> {
        a.json()["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&swapped),
        ["label", "probabilities"],
        "in the order asked"
    );

    // The simple API and TF Serving :classify ride on the same entries.
    let query = "/predict/hit_lr?sepal_length=7.7&sepal_width=2.6&petal_length=6.9&petal_width=2.3";
    let miss = get(&server, query).await;
    let hit = get(&server, query).await;
    assert_eq!(
        (miss.status, miss.cache.as_deref(), hit.cache.as_deref()),
        (200, Some("miss"), Some("hit")),
        "{miss:?}"
    );
    for field in ["prediction", "probabilities", "classes"] {
        assert_eq!(miss.json()[field], hit.json()[field], "{field}");
    }
    let classify = json!({ "examples": [{
        "sepal_length": 4.9, "sepal_width": 3.0, "petal_length": 1.4, "petal_width": 0.2
    }] });
    let miss = post(&server, "/v1/models/hit_lr:classify", &classify).await;
    let hit = post(&server, "/v1/models/hit_lr:classify", &classify).await;
    assert_eq!(
        (miss.status, miss.cache.as_deref(), hit.cache.as_deref()),
        (200, Some("miss"), Some("hit")),
        "{miss:?}"
    );
    assert_eq!(hit.body, miss.body);

    // gRPC: an entry made over REST answers gRPC (the tensors are re-encoded), and a
    // gRPC miss and hit encode to the same bytes.
    let mut client = PredictionServiceClient::new(server.grpc_channel().await);
    let shared = client
        .predict(tf_predict_request("hit_lr", ROW))
        .await
        .unwrap();
    assert_eq!(grpc_cache(&shared).as_deref(), Some("hit"), "REST's entry");
    let fresh = [5.9, 3.0, 5.1, 1.8];
    let miss = client
        .predict(tf_predict_request("hit_lr", fresh))
        .await
        .unwrap();
    let runs = model_runs(&server, "hit_lr", 1).await;
    let hit = client
        .predict(tf_predict_request("hit_lr", fresh))
        .await
        .unwrap();
    assert_eq!(
        (grpc_cache(&miss).as_deref(), grpc_cache(&hit).as_deref()),
        (Some("miss"), Some("hit"))
    );
    // The outputs are a protobuf map, which prost writes in hash order: compare
    // each output tensor's bytes.
    let (hit, miss) = (hit.into_inner(), miss.into_inner());
    assert_eq!(hit.model_spec, miss.model_spec);
    assert_eq!(hit.outputs.len(), miss.outputs.len());
    for (name, tensor) in &miss.outputs {
        assert_eq!(
            hit.outputs[name].encode_to_vec(),
            tensor.encode_to_vec(),
            "{name}"
        );
    }
    assert_eq!(model_runs(&server, "hit_lr", 1).await, runs);

    let mut kserve = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let fresh = [6.3, 3.3, 6.0, 2.5];
    let miss = kserve
        .model_infer(v2_raw_request("hit_lr", fresh))
        .await
        .unwrap();
    let hit = kserve
        .model_infer(v2_raw_request("hit_lr", fresh))
        .await
        .unwrap();
    assert_eq!(
        (grpc_cache(&miss).as_deref(), grpc_cache(&hit).as_deref()),
        (Some("miss"), Some("hit"))
    );
    assert_eq!(
        hit.into_inner().encode_to_vec(),
        miss.into_inner().encode_to_vec()
    );

    // Failed requests are not cached: the same bad request fails twice, with no header.
    let bad = json!({ "instances": [[1.0, 2.0]] });
    for _ in 0..2 {
        let a = post(&server, "/v1/models/hit_lr:predict", &bad).await;
        assert_eq!((a.status, a.cache), (400, None));
    }

    assert!(
        metric(
            &server,
            "ferroserve_cache_hits_total",
            &[("model", "hit_lr"), ("tier", "memory")]
        )
        .await
            >= 8.0
    );
    assert!(
        metric(
            &server,
            "ferroserve_cache_misses_total",
            &[("model", "hit_lr")]
        )
        .await
            >= 7.0
    );
    assert!(metric(&server, "ferroserve_cache_entries", &[("tier", "memory")]).await >= 1.0);
    assert!(metric(&server, "ferroserve_cache_bytes", &[("tier", "memory")]).await > 0.0);
    server.stop().await;
}

/// A request naming every output the model answers unasked, in its order, is the
/// same answer as one naming none, and shares its entry: a KServe V2 request
/// listing them, and the simple API, which always names its outputs (both missed
/// after the same request naming none). Classify, which asks for its scores only,
/// shares with a predict asking that output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naming_every_output_in_the_models_order_shares_the_entry_of_naming_none() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "all_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "all_lr", &format!("{FEATURES}{CACHE_ON}"));
    let server = TestServer::start_with(settings(repo.path())).await;

    // KServe V2: none, then every output listed.
    let none = v2_infer(&server, "all_lr", ROW).await;
    assert_eq!((none.status, none.cache.as_deref()), (200, Some("miss")));
    let runs = model_runs(&server, "all_lr", 1).await;
    let mut listed = v2_body(ROW);
    listed["outputs"] = json!([{ "name": "label" }, { "name": "probabilities" }]);
    let every = post(&server, "/v2/models/all_lr/infer", &listed).await;
    assert_eq!(
        (every.status, every.cache.as_deref()),
        (200, Some("hit")),
        "{every:?}"
    );
    assert_eq!(every.body, none.body, "the same answer");
    assert_eq!(model_runs(&server, "all_lr", 1).await, runs);
    // Another order is an entry of its own (a hit would be given as stored, in
    // the order it was asked, to the next request naming none).
    listed["outputs"] = json!([{ "name": "probabilities" }, { "name": "label" }]);
    let swapped = post(&server, "/v2/models/all_lr/infer", &listed).await;
    assert_eq!(swapped.cache.as_deref(), Some("miss"));

    // The simple API after a TF Serving predict of the same row.
    let row = [6.0, 2.9, 4.5, 1.5];
    let tfs = tfs_predict(&server, "all_lr", row).await;
    assert_eq!((tfs.status, tfs.cache.as_deref()), (200, Some("miss")));
    let simple = post(
        &server,
        "/predict",
        &json!({ "model_id": "all_lr", "features": row }),
    )
    .await;
    assert_eq!(
        (simple.status, simple.cache.as_deref()),
        (200, Some("hit")),
        "{simple:?}"
    );
    let (tfs, simple) = (tfs.json(), simple.json());
    assert_eq!(
        simple["probabilities"], tfs["predictions"][0]["probabilities"],
        "{simple} {tfs}"
    );
    // ... and the other way round.
    let row = [6.3, 3.3, 6.0, 2.5];
    let simple = post(
        &server,
        "/predict",
        &json!({ "model_id": "all_lr", "features": row }),
    )
    .await;
    assert_eq!(simple.cache.as_deref(), Some("miss"), "{simple:?}");
    assert_eq!(
        tfs_predict(&server, "all_lr", row).await.cache.as_deref(),
        Some("hit")
    );

    // Classify asks for the scores alone: the entry of a predict asking that output.
    let row = [4.9, 3.0, 1.4, 0.2];
    let mut scores = v2_body(row);
    scores["outputs"] = json!([{ "name": "probabilities" }]);
    let predicted = post(&server, "/v2/models/all_lr/infer", &scores).await;
    assert_eq!(predicted.cache.as_deref(), Some("miss"));
    let classify = json!({ "examples": [{
        "sepal_length": 4.9, "sepal_width": 3.0, "petal_length": 1.4, "petal_width": 0.2
    }] });
    let classified = post(&server, "/v1/models/all_lr:classify", &classify).await;
    assert_eq!(
        (classified.status, classified.cache.as_deref()),
        (200, Some("hit")),
        "{classified:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_given_identical_inputs_never_share_entries() {
    let repo = tempfile::tempdir().unwrap();
    // The same file under two names: only the header can tell a shared entry.
    install_model(repo.path(), "twin_a", 1, &root_path(IRIS_LR));
    install_model(repo.path(), "twin_b", 1, &root_path(IRIS_LR));
    install_model(repo.path(), "twin_c", 1, &root_path(IRIS_DT));
    for m in ["twin_a", "twin_b", "twin_c"] {
        write_config(repo.path(), m, CACHE_ON);
    }
    let server = TestServer::start_with(settings(repo.path())).await;
    let row = [6.0, 2.9, 4.5, 1.5];
    let a = tfs_predict(&server, "twin_a", row).await;
    assert_eq!(a.cache.as_deref(), Some("miss"));
    assert_eq!(
        tfs_predict(&server, "twin_a", row).await.cache.as_deref(),
        Some("hit")
    );
    let runs_b = model_runs(&server, "twin_b", 1).await;
    let b = tfs_predict(&server, "twin_b", row).await;
    assert_eq!(
        b.cache.as_deref(),
        Some("miss"),
        "twin_b has entries of its own"
    );
    assert_eq!(model_runs(&server, "twin_b", 1).await, runs_b + 1.0);
    let c = tfs_predict(&server, "twin_c", row).await;
    assert_eq!(c.cache.as_deref(), Some("miss"));
    assert_ne!(c.body, a.body, "another model, another answer");
    assert_eq!(
        metric(
            &server,
            "ferroserve_cache_misses_total",
            &[("model", "twin_b")]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &server,
            "ferroserve_cache_hits_total",
            &[("model", "twin_b")]
        )
        .await,
        0.0
    );
    server.stop().await;
}

/// `admission = "second_miss"`: an answer is stored when its request misses for
/// the second time, so the third identical request is the first hit; a request
/// seen once stores nothing (counted). The default stores at the first miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_miss_admission_stores_an_answer_when_its_request_repeats() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "picky", 1, &root_path(IRIS_LR));
    write_config(
        repo.path(),
        "picky",
        "[cache]\nenabled = true\nadmission = \"second_miss\"\n",
    );
    let server = TestServer::start_with(settings(repo.path())).await;
    let not_admitted = || async {
        metric(
            &server,
            "ferroserve_cache_not_admitted_total",
            &[("model", "picky")],
        )
        .await
    };
    for row in [[6.0, 2.9, 4.5, 1.5], [5.9, 3.0, 5.1, 1.8]] {
        let before = not_admitted().await;
        let runs = model_runs(&server, "picky", 1).await;
        let first = tfs_predict(&server, "picky", row).await;
        assert_eq!(first.status, 200);
        assert_eq!(first.cache.as_deref(), Some("miss"));
        assert_eq!(not_admitted().await, before + 1.0, "the first miss stores");
        let second = tfs_predict(&server, "picky", row).await;
        assert_eq!(
            second.cache.as_deref(),
            Some("miss"),
            "stored at the first miss"
        );
        assert_eq!(not_admitted().await, before + 1.0);
        let third = tfs_predict(&server, "picky", row).await;
        assert_eq!(third.cache.as_deref(), Some("hit"));
        assert_eq!(third.body, first.body);
        assert_eq!(model_runs(&server, "picky", 1).await, runs + 2.0);
    }
    // Switched back by an edit (live, like the rest of [cache]): stored at the
    // first miss, so a new request's second call is a hit.
    write_config(repo.path(), "picky", CACHE_ON);
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        let row = [6.3, 3.3, 6.0, 2.5 + n as f32 / 100.0];
        assert_eq!(
            tfs_predict(&server, "picky", row).await.cache.as_deref(),
            Some("miss")
        );
        if tfs_predict(&server, "picky", row).await.cache.as_deref() == Some("hit") {
            break;
        }
        assert!(Instant::now() < deadline, "the edit did not apply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cache_there_is_no_header_and_the_backend_runs_every_time() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "plain_lr", 1, &root_path(IRIS_LR));
    install_model(repo.path(), "no_tier_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "no_tier_lr", CACHE_ON);
    // The default server: plain_lr has no [cache].
    let server = TestServer::start_with(settings(repo.path())).await;
    let before = model_runs(&server, "plain_lr", 1).await;
    for _ in 0..3 {
        let a = tfs_predict(&server, "plain_lr", ROW).await;
        assert_eq!((a.status, a.cache), (200, None));
    }
    assert_eq!(model_runs(&server, "plain_lr", 1).await, before + 3.0);
    server.stop().await;

    // A server with no tier at all: [cache] enabled changes nothing.
    let server = TestServer::start_with(Settings {
        cache_max_bytes: 0,
        ..settings(repo.path())
    })
    .await;
    let before = model_runs(&server, "no_tier_lr", 1).await;
    for _ in 0..3 {
        let a = tfs_predict(&server, "no_tier_lr", ROW).await;
        assert_eq!((a.status, a.cache), (200, None));
    }
    assert_eq!(model_runs(&server, "no_tier_lr", 1).await, before + 3.0);
    server.stop().await;
}
