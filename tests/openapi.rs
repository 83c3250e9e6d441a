//! The OpenAPI description and the docs page over a real socket (issue 17):
//! `/openapi.json`, `/swagger.yaml` and Swagger UI at `/docs` (its files from the
//! binary, nothing fetched); every described operation reaches a handler (no
//! router 404/405); and the docs routes pass the access layer like the other
//! read-only routes (a token with the `inference` scope once tokens are configured).
//! That every route is described is checked in `src/http/openapi.rs`'s unit tests.

mod common;

use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::auth::{to_hex, token_sha256};
use ferroserve::settings::Settings;
use serde_json::Value;

const READER: &str = "fst_reader-token-with-inference-only";

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    install_model(
        &dir.path().join("models"),
        "iris_lr",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    dir
}

async fn fetch(server: &TestServer, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut request = server.client.get(server.url(path));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_and_the_docs_page_are_served() {
    let dir = repo();
    let server = TestServer::start(&dir.path().join("models")).await;

    let (status, content_type, json) = fetch(&server, "/openapi.json", None).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v2/models/{model}/infer"]["post"].is_object());

    let (status, content_type, yaml) = fetch(&server, "/swagger.yaml", None).await;
    assert_eq!((status, content_type.as_str()), (200, "application/yaml"));
    assert!(yaml.starts_with("openapi: 3.1.0\n"), "{}", &yaml[..40]);
    assert!(yaml.contains("/v1/models/{model}:predict:"));

    // Swagger UI: the page, its script (vendored into the binary) and its config,
    // which points at this server's description.
    let (status, content_type, page) = fetch(&server, "/docs/", None).await;
    assert_eq!((status, content_type.as_str()), (200, "text/html"));
    assert!(page.contains("swagger-ui-bundle.js"), "{page}");
    let (status, _, bundle) = fetch(&server, "/docs/swagger-ui-bundle.js", None).await;
    assert_eq!(status, 200);
    assert!(bundle.len() > 100_000, "{} bytes", bundle.len());
    let (status, _, init) = fetch(&server, "/docs/swagger-initializer.js", None).await;
    assert_eq!(status, 200);
    // Relative to the page, so that a proxy's path prefix is kept.
    assert!(init.contains("\"url\": \"../openapi.json\""), "{init}");
    // Works offline and tells no one of this server: Swagger UI's default badge
    // would send the description's address to validator.swagger.io.
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    server.stop().await;
}

/// Each described operation, with its path parameters filled in (a model that does
/// not exist, so that no management call changes anything), reaches a handler:
/// the answer is never the router's own 404 ("no such endpoint") or 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_described_operation_is_routed() {
    let dir = repo();
    let server = TestServer::start(&dir.path().join("models")).await;
    let (_, _, json) = fetch(&server, "/openapi.json", None).await;
    let doc: Value = serde_json::from_str(&json).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = path
            .replace("{model}", "no_such_model")
            .replace("{model_id}", "no_such_model")
            .replace("{version}", "7")
            .replace("{label}", "stable")
            .replace("{id}", "no-such-job");
        assert!(
            !url.contains('{'),
            "{path}: a path parameter this test does not fill"
        );
        for method in ["get", "post", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let request = server
                .client
                .request(method.to_uppercase().parse().unwrap(), server.url(&url));
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path}: {body}");
            assert!(
                !(status == 404 && body.contains("no such endpoint")),
                "{method} {path} is described but not routed: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} operations");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_stay_open_and_calls_need_tokens_when_tokens_are_configured() {
    let dir = repo();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nname = \"reader\"\nsha256 = \"{}\"\nscopes = [\"inference\"]\n",
            to_hex(&token_sha256(READER))
        ),
    )
    .unwrap();
    let server = TestServer::start_with(Settings {
        auth_tokens: Some(tokens),
        ..test_settings(&dir.path().join("models"))
    })
    .await;
    // A browser loads the description and the docs page without a token.
    for path in ["/openapi.json", "/swagger.yaml", "/docs/"] {
        let (status, _, body) = fetch(&server, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // The description says which calls need a token, and they do.
    let (_, _, json) = fetch(&server, "/openapi.json", None).await;
    let doc: Value = serde_json::from_str(&json).unwrap();
    let responses = &doc["paths"]["/v1/models/{model}"]["get"]["responses"];
    assert!(responses.get("401").is_some(), "{responses}");
    assert!(doc["paths"]["/openapi.json"]["get"]["responses"]
        .get("401")
        .is_none());
    let (status, _, _) = fetch(&server, "/v1/models/iris_lr", None).await;
    assert_eq!(status, 401);
    let (status, _, _) = fetch(&server, "/v1/models/iris_lr", Some(READER)).await;
    assert_eq!(status, 200);
    // Health stays open, as the description says.
    let (status, _, _) = fetch(&server, "/healthz", None).await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// The request examples in the description work: each operation with a JSON
/// example body, called on `iris_lr` version 1, answers 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_in_the_description_work() {
    let dir = repo();
    let server = TestServer::start(&dir.path().join("models")).await;
    let (_, _, json) = fetch(&server, "/openapi.json", None).await;
    let doc: Value = serde_json::from_str(&json).unwrap();
    let mut checked = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(example) =
            item["post"]["requestBody"]["content"]["application/json"].get("example")
        else {
            continue;
        };
        if path.contains("{label}") {
            continue; // iris_lr has no labels
        }
        let url = path
            .replace("{model}", "iris_lr")
            .replace("{model_id}", "iris_lr")
            .replace("{version}", "1");
        let response = server
            .client
            .post(server.url(&url))
            .json(example)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "POST {url} with {example}: {body}");
        checked.push(url);
    }
    // TF Serving's :predict (latest and by version), V2 infer (two), simple predict (three).
    assert!(checked.len() >= 7, "{checked:?}");
    server.stop().await;
}

/// The description lists what the server answers before any route: a body with a
/// `Content-Encoding` (415) on every route that takes a body, inference routes
/// included; a transfer coding other than chunked (501); more than one `Host`
/// (400). Each is checked against the server's answer for one such route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answers_before_any_route_are_described() {
    let dir = repo();
    let server = TestServer::start(&dir.path().join("models")).await;
    let (_, _, json) = fetch(&server, "/openapi.json", None).await;
    let doc: Value = serde_json::from_str(&json).unwrap();
    let body = serde_json::json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}).to_string();
    for (path, url) in [
        ("/v1/models/{model}:predict", "/v1/models/iris_lr:predict"),
        ("/v2/models/{model}/infer", "/v2/models/iris_lr/infer"),
        ("/predict", "/predict"),
        ("/predict/{model_id}", "/predict/iris_lr"),
        ("/v2/repository/index", "/v2/repository/index"),
    ] {
        let responses = &doc["paths"][path]["post"]["responses"];
        for code in ["415", "501", "400"] {
            assert!(responses.get(code).is_some(), "{path} {code}: {responses}");
        }
        let status = server
            .client
            .post(server.url(url))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 415, "{url}");
    }
    // More than one Host can be sent to any route.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                assert!(
                    operation["responses"].get("400").is_some(),
                    "{method} {path}"
                );
            }
        }
    }
    server.stop().await;
}
