//! Findings of a black-box probe of access control, over real sockets: a TF
//! Serving label or version named `history` or `predictions` is the status route
//! (inference), not the metadata store's views (management); and `/upload_model`,
//! which takes only multipart bodies, refuses any other (JSON included) with a 415
//! that names only multipart/form-data. (The CLI's finding, a server that wants a
//! client certificate, is tested with the other TLS tests in `tls.rs`.)

mod common;

use std::path::Path;

use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::auth::{to_hex, token_sha256};
use ferroserve::settings::Settings;
use serde_json::Value;

const INFERENCE: &str = "fst_probe-token-with-inference-only";
const MANAGEMENT: &str = "fst_probe-token-with-management-only";

/// A repository with `lab` (iris_lr, ONNX) whose labels are named like the store's
/// views, and a tokens file beside it: one inference token, one management token.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    install_model(
        &models,
        "lab",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    std::fs::write(
        models.join("lab").join("config.toml"),
        "[labels]\nhistory = 1\npredictions = 1\nstable = 1\n",
    )
    .unwrap();
    let entry = |name: &str, token: &str, scope: &str| {
        format!(
            "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [\"{scope}\"]\n",
            to_hex(&token_sha256(token))
        )
    };
    std::fs::write(
        dir.path().join("tokens.toml"),
        entry("inf", INFERENCE, "inference") + &entry("mgmt", MANAGEMENT, "management"),
    )
    .unwrap();
    dir
}

fn settings_with_tokens(dir: &Path) -> Settings {
    Settings {
        auth_tokens: Some(dir.join("tokens.toml")),
        ..test_settings(&dir.join("models"))
    }
}

async fn get(server: &TestServer, path: &str, token: &str) -> (u16, Value) {
    let r = server
        .client
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    common::status_and_body(r).await
}

/// `/v1/models/{m}/labels/history` is the status of the version labelled
/// `history`: an inference token reads it as it reads `labels/stable`, and a
/// management-only token does not. Only `/v1/models/{m}/history` itself (and
/// `predictions`) is the store's, and needs management.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_and_versions_named_like_store_views_are_the_status_route() {
    let dir = repo();
    let server = TestServer::start_with(settings_with_tokens(dir.path())).await;
    for label in ["stable", "history", "predictions", "%68istory"] {
        let path = format!("/v1/models/lab/labels/{label}");
        let (status, body) = get(&server, &path, INFERENCE).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            body["model_version_status"][0]["version"], "1",
            "{path}: {body}"
        );
        let (status, body) = get(&server, &path, MANAGEMENT).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("\"inference\""),
            "{path}: {body}"
        );
    }
    // A version named so is a malformed version (400), for an inference token too,
    // not a management route.
    for path in [
        "/v1/models/lab/versions/history",
        "/v1/models/lab/versions/predictions",
    ] {
        let (status, body) = get(&server, path, INFERENCE).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    // A label's or a version's `…/history` is no route: 404, not 403.
    for path in [
        "/v1/models/lab/labels/stable/history",
        "/v1/models/lab/versions/1/predictions",
    ] {
        let (status, body) = get(&server, path, INFERENCE).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    // The store's views still need management, however spelled.
    for path in [
        "/v1/models/lab/history",
        "/v1/models/lab/predictions",
        "/v1/models/lab%2Fhistory",
    ] {
        let (status, body) = get(&server, path, INFERENCE).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("\"management\""),
            "{path}: {body}"
        );
    }
    server.stop().await;
}

/// `/upload_model` takes multipart/form-data and nothing else: text, JSON or a
/// body with no type at all each get the same 415, naming only what it takes
/// (JSON used to pass the type check and get a 400 about a missing boundary). The
/// job routes take JSON or multipart, and say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refuses_every_body_but_multipart_with_a_true_415() {
    let dir = repo();
    let server = TestServer::start(&dir.path().join("models")).await;
    let upload_takes = "this management request takes multipart/form-data (a model file and \
                        its fields), not ";
    for (content_type, given) in [
        (Some("text/plain"), "\"text/plain\""),
        (Some("application/json"), "\"application/json\""),
        (
            Some("Application/JSON; charset=utf-8"),
            "\"application/json\"",
        ),
        (None, "a body with no Content-Type"),
    ] {
        let mut request = server.client.post(server.url("/upload_model"));
        if let Some(t) = content_type {
            request = request.header("content-type", t);
        }
        let r = request.body("{\"abc\": 1}").send().await.unwrap();
        let (status, body) = common::status_and_body(r).await;
        assert_eq!(status, 415, "{content_type:?}: {body}");
        assert_eq!(
            body["error"].as_str().unwrap(),
            format!("{upload_takes}{given}"),
            "{content_type:?}"
        );
    }
    // A multipart body without its boundary is a multipart body gone wrong: 400.
    let r = server
        .client
        .post(server.url("/upload_model"))
        .header("content-type", "multipart/form-data")
        .body("abc")
        .send()
        .await
        .unwrap();
    let (status, body) = common::status_and_body(r).await;
    assert_eq!(status, 400, "{body}");
    for path in ["/v1/jobs", "/predictall", "/train"] {
        let r = server
            .client
            .post(server.url(path))
            .header("content-type", "text/plain")
            .body("abc")
            .send()
            .await
            .unwrap();
        let (status, body) = common::status_and_body(r).await;
        assert_eq!(status, 415, "{path}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("takes application/json or multipart/form-data, not \"text/plain\""),
            "{path}: {error}"
        );
    }
    server.stop().await;
}
