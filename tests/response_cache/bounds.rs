//! The in-process tier's bounds: the model's TTL, and the bytes of
//! `--cache-max-bytes` with its evictions counted.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_the_models_ttl() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "ttl_lr", 1, &root_path(IRIS_LR));
    write_config(
        repo.path(),
        "ttl_lr",
        "[cache]\nenabled = true\nttl_secs = 1\n",
    );
    let server = TestServer::start_with(settings(repo.path())).await;
    let started = Instant::now();
    assert_eq!(
        tfs_predict(&server, "ttl_lr", ROW).await.cache.as_deref(),
        Some("miss")
    );
    assert_eq!(
        tfs_predict(&server, "ttl_lr", ROW).await.cache.as_deref(),
        Some("hit")
    );
    eventually("the entry expires", Duration::from_secs(15), || async {
        tfs_predict(&server, "ttl_lr", ROW).await.cache.as_deref() == Some("miss")
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(1), "expired early");
    assert_eq!(
        tfs_predict(&server, "ttl_lr", ROW).await.cache.as_deref(),
        Some("hit"),
        "stored afresh"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_tier_stays_within_its_bytes_and_counts_evictions() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "small_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "small_lr", CACHE_ON);
    let limit = 4096u64;
    let server = TestServer::start_with(Settings {
        cache_max_bytes: limit,
        ..settings(repo.path())
    })
    .await;
    for i in 0..60 {
        let row = [4.0 + i as f32 * 0.05, 3.0, 1.4, 0.2];
        assert_eq!(tfs_predict(&server, "small_lr", row).await.status, 200);
    }
    let bytes = metric(&server, "ferroserve_cache_bytes", &[("tier", "memory")]).await;
    assert!(bytes > 0.0 && bytes <= limit as f64, "{bytes} bytes held");
    let evicted = metric(
        &server,
        "ferroserve_cache_evictions_total",
        &[
            ("model", "small_lr"),
            ("tier", "memory"),
            ("reason", "size"),
        ],
    )
    .await;
    assert!(evicted >= 40.0, "only {evicted} evictions");
    server.stop().await;
}
