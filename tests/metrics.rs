//! `/metrics` over a real socket: a version's series leave with the version, the
//! model's own series stay.

mod common;

use std::time::{Duration, Instant};

use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use serde_json::json;

async fn scrape(server: &TestServer) -> String {
    let r = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_versions_series_leave_metrics() {
    // Named for this test alone: the recorder is global to the test binary.
    let model = "metrics_swapped";
    let lr = root_path("examples/models/iris_lr/1/model.onnx");
    let dt = root_path("examples/models/iris_dt/1/model.onnx");
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), model, 1, &lr);
    let server = TestServer::start_with(Settings {
        file_system_poll_wait: Duration::ZERO,
        ..test_settings(repo.path())
    })
    .await;
    let row = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]});
    let path = format!("/v1/models/{model}:predict");
    assert_eq!(server.post_json(&path, &row).await.0, 200);
    let v1 = format!("model=\"{model}\",version=\"1\"");
    let text = scrape(&server).await;
    assert!(text.contains(&v1), "{text}");

    // Version 2 replaces version 1 (the default policy serves the latest).
    install_model(repo.path(), model, 2, &dt);
    let (code, body) = server
        .get(&format!("/reload_model?modelname={model}"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(server.post_json(&path, &row).await.0, 200);

    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(&server).await;
        if !text.contains(&v1) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "version 1's series are still there:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        text.contains(&format!(
            "ferroserve_requests_total{{model=\"{model}\",version=\"2\",protocol=\"tfs_rest\",outcome=\"ok\"}} 1"
        )),
        "{text}"
    );
    // The model's per-protocol latency (and request count) outlives its versions.
    assert!(
        text.contains(&format!(
            "ferroserve_request_duration_seconds_count{{model=\"{model}\",protocol=\"tfs_rest\"}} 2"
        )),
        "{text}"
    );
    server.stop().await;
}
