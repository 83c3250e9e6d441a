//! The Redis tier (a real `redis-server` per test): hits shared by two servers, and
//! Redis down at start or killed under load failing no prediction.

use super::*;

fn redis_settings(repo: &Path, redis: &RedisServer) -> Settings {
    Settings {
        redis_url: Some(redis.url()),
        // Generous: the CI machine is busy, and a slow lookup is only a miss.
        redis_timeout: Duration::from_millis(500),
        ..settings(repo)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_hits_through_one_redis() {
    let redis = RedisServer::start();
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "shared_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "shared_lr", CACHE_ON);
    install_model(
        repo.path(),
        "shared_ft",
        1,
        &root_path("tests/fixtures/fasttext/softmax.bin"),
    );
    write_config(repo.path(), "shared_ft", CACHE_ON);
    let a = TestServer::start_with(redis_settings(repo.path(), &redis)).await;
    let b = TestServer::start_with(redis_settings(repo.path(), &redis)).await;

    let miss = v2_infer(&a, "shared_lr", ROW).await;
    assert_eq!(miss.cache.as_deref(), Some("miss"));
    // The write to Redis runs beside the answer: wait until it is there.
    eventually(
        "the entry reaches Redis",
        Duration::from_secs(10),
        || async { redis.key_count() >= 1 },
    )
    .await;
    let runs = model_runs(&b, "shared_lr", 1).await;
    let hit = v2_infer(&b, "shared_lr", ROW).await;
    assert_eq!(
        hit.cache.as_deref(),
        Some("hit"),
        "server b answers from a's entry"
    );
    assert_eq!(hit.body, miss.body, "bit for bit");
    assert_eq!(
        model_runs(&b, "shared_lr", 1).await,
        runs,
        "b's backend never ran"
    );
    assert!(
        metric(
            &b,
            "ferroserve_cache_hits_total",
            &[("model", "shared_lr"), ("tier", "redis")]
        )
        .await
            >= 1.0
    );
    // Over gRPC too, from the same entry (kept in b's memory now).
    let mut kserve = GrpcInferenceServiceClient::new(b.grpc_channel().await);
    let r = kserve
        .model_infer(v2_raw_request("shared_lr", ROW))
        .await
        .unwrap();
    assert_eq!(grpc_cache(&r).as_deref(), Some("hit"));

    // The key is namespaced, and the TTL set in Redis is the model's.
    let keys = redis.command("KEYS *").unwrap();
    assert!(keys.contains("ferroserve:cache:v1:"), "{keys}");

    // An entry that decodes but does not fit the request (an output renamed, a
    // dtype or a row count changed: written by something else) is corrupt and a
    // miss; it was served as a hit ({"zzz": …}, or a 400 for a hit).
    let key = keys
        .lines()
        .find(|l| l.starts_with("ferroserve:cache:v1:"))
        .unwrap()
        .to_string();
    let c = TestServer::start_with(Settings {
        cache_max_bytes: 0,
        ..redis_settings(repo.path(), &redis)
    })
    .await;
    // A fastText answer (labels and probabilities; its sentence vector only when
    // asked) is taken from Redis too: it was counted corrupt, every time.
    let text = json!({"instances": ["hello there"]});
    let first = post(&a, "/v1/models/shared_ft:predict", &text).await;
    assert_eq!(first.cache.as_deref(), Some("miss"), "{:?}", first.json());
    eventually(
        "the fastText entry reaches Redis",
        Duration::from_secs(10),
        || async { redis.key_count() >= 2 },
    )
    .await;
    let from_redis = post(&c, "/v1/models/shared_ft:predict", &text).await;
    assert_eq!(
        from_redis.cache.as_deref(),
        Some("hit"),
        "{:?}",
        from_redis.json()
    );
    assert_eq!(from_redis.body, first.body);
    let label = Tensor::new(vec![1], TensorData::I64(vec![0])).unwrap();
    let proba = Tensor::new(vec![1, 3], TensorData::F32(vec![0.5, 0.25, 0.25])).unwrap();
    // The entry the servers wrote; after each miss below, c writes it back in the
    // background, which must land before the next entry is planted (else it
    // overwrites that one and the request is a hit).
    let get = || redis.command(&format!("GET {key}")).unwrap();
    let fresh = get();
    for unfit in [
        vec![
            ("zzz".to_string(), label.clone()),
            ("probabilities".to_string(), proba.clone()),
        ],
        vec![
            (
                "label".to_string(),
                label.clone().cast(DataType::F64).unwrap(),
            ),
            ("probabilities".to_string(), proba.clone()),
        ],
        vec![
            (
                "label".to_string(),
                Tensor::new(vec![2], TensorData::I64(vec![0, 1])).unwrap(),
            ),
            ("probabilities".to_string(), proba.clone()),
        ],
        vec![("label".to_string(), label.clone())],
    ] {
        let reply = redis
            .set_bytes(&key, &ferroserve::cache::codec::encode(&unfit))
            .unwrap();
        assert!(reply.starts_with("+OK"), "{reply}");
        let again = v2_infer(&c, "shared_lr", ROW).await;
        assert_eq!(again.status, 200, "{:?}", again.json());
        assert_eq!(again.cache.as_deref(), Some("miss"), "{unfit:?}");
        assert_eq!(again.body, miss.body, "{unfit:?}");
        eventually(
            "the answer is written back to Redis",
            Duration::from_secs(10),
            || async { get() == fresh },
        )
        .await;
    }
    let corrupt = metric(
        &c,
        "ferroserve_cache_redis_errors_total",
        &[("op", "get"), ("reason", "corrupt")],
    )
    .await;
    assert!(corrupt >= 4.0, "{corrupt}");
    c.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_stops_nothing_and_is_used_once_it_is_up() {
    let mut redis = RedisServer::start();
    redis.kill();
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "late_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "late_lr", CACHE_ON);
    // Redis only, so that every hit comes from it.
    let server = TestServer::start_with(Settings {
        cache_max_bytes: 0,
        ..redis_settings(repo.path(), &redis)
    })
    .await;
    for _ in 0..3 {
        let a = tfs_predict(&server, "late_lr", ROW).await;
        assert_eq!((a.status, a.cache.as_deref()), (200, Some("miss")));
    }
    redis.restart();
    eventually(
        "hits from Redis once it is up",
        Duration::from_secs(30),
        || async { tfs_predict(&server, "late_lr", ROW).await.cache.as_deref() == Some("hit") },
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_fails_no_prediction_and_hits_resume_after_restart() {
    let mut redis = RedisServer::start();
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "load_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "load_lr", CACHE_ON);
    let server = Arc::new(
        TestServer::start_with(Settings {
            cache_max_bytes: 0,
            redis_timeout: Duration::from_millis(2000),
            ..redis_settings(repo.path(), &redis)
        })
        .await,
    );

    // A client predicting continuously, counting answers, failures and hits.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let hits = Arc::new(AtomicU64::new(0));
    let client = {
        let (server, stop, answered, failed, hits) = (
            server.clone(),
            stop.clone(),
            answered.clone(),
            failed.clone(),
            hits.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let a = tfs_predict(&server, "load_lr", ROW).await;
                if a.status == 200 {
                    answered.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed prediction: {a:?}");
                }
                if a.cache.as_deref() == Some("hit") {
                    hits.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    eventually("hits from Redis", Duration::from_secs(20), || async {
        hits.load(Ordering::Relaxed) > 0
    })
    .await;

    let errors = || metric(&server, "ferroserve_cache_redis_errors_total", &[]);
    let errors_before = errors().await;
    redis.kill();
    let answered_at_kill = answered.load(Ordering::Relaxed);
    eventually(
        "the Redis error counter rises",
        Duration::from_secs(20),
        || async { errors().await > errors_before },
    )
    .await;
    // Keep predicting without Redis for a while.
    eventually(
        "predictions go on without Redis",
        Duration::from_secs(30),
        || async { answered.load(Ordering::Relaxed) >= answered_at_kill + 50 },
    )
    .await;
    // Once the supervisor has found Redis gone (a failed ping), requests skip it
    // rather than each waiting on the reconnection (up to the lookup bound, 2 s
    // here): ten requests in a row take less than one bound together.
    let pings = || {
        metric(
            &server,
            "ferroserve_cache_redis_errors_total",
            &[("op", "ping")],
        )
    };
    let pings_failed = pings().await;
    eventually("a ping fails", Duration::from_secs(20), || async {
        pings().await > pings_failed
    })
    .await;
    let started = Instant::now();
    for _ in 0..10 {
        let a = tfs_predict(&server, "load_lr", ROW).await;
        assert_eq!((a.status, a.cache.as_deref()), (200, Some("miss")));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "ten requests waited {:?} for a Redis that is down",
        started.elapsed()
    );

    redis.restart();
    let hits_at_restart = hits.load(Ordering::Relaxed);
    eventually(
        "hits resume after Redis restarts",
        Duration::from_secs(30),
        || async { hits.load(Ordering::Relaxed) > hits_at_restart },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no prediction failed");
    assert!(answered.load(Ordering::Relaxed) > 50);
    Arc::try_unwrap(server).ok().unwrap().stop().await;
}
