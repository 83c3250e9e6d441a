//! The web console's routes without a browser (issue 17): pages render, assets are
//! served with their content types, `/` redirects, an unknown model's page is a 404
//! page, the chart data reads the server's own metrics, and with tokens the shells
//! and assets load without one while everything with data needs it; a page for a
//! name no model or job can have (a crafted `..%2F..` link) is refused, and the
//! deploy panel says what `/deploy` does with workers on or off; `/docs` is never
//! framed by another site.
//! The browser test is `tests/console_browser.py` (run by scripts/test.sh).

mod common;

use std::path::Path;

use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::auth::{to_hex, token_sha256};
use serde_json::{json, Value};

const FULL: &str = "fst_console-test-token-with-every-scope";
const READER: &str = "fst_console-test-token-inference-only";

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for m in ["iris_lr", "iris_dt"] {
        install_model(
            &models,
            m,
            1,
            &root_path(&format!("examples/models/{m}/1/model.onnx")),
        );
    }
    // Feature names from config.toml, which the simple API takes by name.
    std::fs::write(
        models.join("iris_dt/config.toml"),
        "feature_names = [\"sl\", \"sw\", \"pl\", \"pw\"]\n",
    )
    .unwrap();
    install_model(
        &models,
        "iris_sklearn",
        1,
        &root_path("examples/models/iris_sklearn/1/model.joblib"),
    );
    // A text model (fastText), served as model.bin.
    let ft = install_model(
        &models,
        "intent",
        1,
        &root_path("tests/fixtures/fasttext/softmax.bin"),
    );
    std::fs::rename(&ft, ft.with_file_name("model.bin")).unwrap();
    // An image model (`[preprocess] image`) and a text model fed through a tokenizer.
    let image = install_model(
        &models,
        "gray_image",
        1,
        &root_path("tests/fixtures/preprocess/images/identity_nchw1.onnx"),
    );
    std::fs::rename(&image, image.with_file_name("model.onnx")).unwrap();
    std::fs::write(
        models.join("gray_image/config.toml"),
        "[preprocess]\nimage = { width = 32, height = 24, resize = \"crop\", \
         channels = \"gray\", layout = \"nchw\" }\n",
    )
    .unwrap();
    let minilm = install_model(
        &models,
        "minilm",
        1,
        &root_path("tests/fixtures/preprocess/minilm/model.onnx"),
    );
    std::fs::copy(
        root_path("tests/fixtures/preprocess/minilm/tokenizer.json"),
        minilm.with_file_name("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        models.join("minilm/config.toml"),
        "[preprocess]\ntokenizer = \"tokenizer.json\"\n",
    )
    .unwrap();
    dir
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Answer {
    status: u16,
    content_type: String,
    location: String,
    frame_policy: String,
    body: String,
}

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> Answer {
    let mut request = client().get(server.url(path));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (content_type, location) = (header("content-type"), header("location"));
    let frame_policy = format!(
        "{} {}",
        header("content-security-policy"),
        header("x-frame-options")
    );
    Answer {
        status: r.status().as_u16(),
        content_type,
        location,
        frame_policy,
        body: r.text().await.unwrap(),
    }
}

fn assert_html(a: &Answer, status: u16, contains: &[&str]) {
    assert_eq!(a.status, status, "{}", a.body);
    // No other site may frame a page (clickjacking its buttons).
    assert_eq!(a.frame_policy, "frame-ancestors 'self' SAMEORIGIN");
    assert!(
        a.content_type.starts_with("text/html"),
        "{}: {}",
        a.content_type,
        a.body
    );
    for c in contains {
        assert!(a.body.contains(c), "{c:?} not in {}", a.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_fragments_assets_and_chart_data() {
    let dir = repo();
    let server = TestServer::start(&dir.path().join("models")).await;

    let root = get(&server, "/", None).await;
    assert!(
        (300..400).contains(&root.status) && root.location == "/console",
        "{} {}",
        root.status,
        root.location
    );

    // The shell: no data, but the scripts, the upload form and labelled controls.
    let shell = get(&server, "/console", None).await;
    assert_html(
        &shell,
        200,
        &[
            "/console/assets/htmx-4.0.1.min.js",
            "hx-get=\"/console/fragments/models\"",
            "<label for=\"upload-file\"",
            "id=\"upload-progress\"",
        ],
    );
    assert!(!shell.body.contains("iris_lr"), "{}", shell.body);

    for (asset, content_type, needle) in [
        ("htmx-4.0.1.min.js", "text/javascript", "4.0.1"),
        ("uPlot-1.6.32.iife.min.js", "text/javascript", "uPlot"),
        ("uPlot-1.6.32.min.css", "text/css", ".uplot"),
        ("console.js", "text/javascript", "sessionStorage"),
        ("console.css", "text/css", ":focus-visible"),
    ] {
        let a = get(&server, &format!("/console/assets/{asset}"), None).await;
        assert_eq!(a.status, 200, "{asset}");
        assert!(
            a.content_type.starts_with(content_type),
            "{asset}: {}",
            a.content_type
        );
        assert!(a.body.contains(needle), "{asset}");
    }
    assert_eq!(
        get(&server, "/console/assets/nope.js", None).await.status,
        404
    );

    // Every model with its versions and states.
    let models = get(&server, "/console/fragments/models", None).await;
    assert_html(
        &models,
        200,
        &[
            "data-model=\"iris_lr\"",
            "data-model=\"iris_dt\"",
            "data-model=\"iris_sklearn\"",
            "AVAILABLE",
            "href=\"/console/models/iris_lr\"",
            // Recent history: the store's state-change events.
            "state LOADING → AVAILABLE",
        ],
    );

    // A model's page; an unknown model's page is a 404 page, its fragment too.
    assert_html(
        &get(&server, "/console/models/iris_lr", None).await,
        200,
        &[
            "/console/fragments/models/iris_lr",
            "id=\"charts\"",
            "data-action=\"delete\"",
        ],
    );
    // Workers are off in these settings: the deploy panel says deployments run in
    // this process.
    let page = get(&server, "/console/models/iris_lr", None).await;
    assert!(
        page.body.contains("deployments run in this process")
            && !page.body.contains("own worker process"),
        "{}",
        page.body
    );
    assert_html(
        &get(&server, "/console/models/no_such_model", None).await,
        404,
        &["Not found", "no_such_model"],
    );
    assert_html(
        &get(&server, "/console/fragments/models/no_such_model", None).await,
        404,
        &["no_such_model"],
    );
    assert_html(
        &get(&server, "/console/fragments/models/iris_lr", None).await,
        200,
        &["AVAILABLE", "Deployment settings", "Recent history"],
    );

    // The "try it" form follows the signature: four columns of the ONNX model's
    // input, the scikit-learn model's features by name.
    let onnx = get(&server, "/console/fragments/models/iris_lr/try", None).await;
    assert_html(
        &onnx,
        200,
        &["data-mode=\"positional\"", "data-kind=\"number\""],
    );
    assert_eq!(
        onnx.body.matches("data-feature=").count(),
        4,
        "{}",
        onnx.body
    );
    let sklearn = get(&server, "/console/fragments/models/iris_sklearn/try", None).await;
    assert_html(
        &sklearn,
        200,
        &[
            "data-mode=\"named\"",
            "data-feature=\"sepal_length\"",
            "data-feature=\"petal_width\"",
        ],
    );
    for i in 0..4 {
        assert!(onnx.body.contains(&format!("<label for=\"try-field-{i}\"")));
    }
    let named = get(&server, "/console/fragments/models/iris_dt/try", None).await;
    assert_html(
        &named,
        200,
        &[
            "data-mode=\"named\"",
            "data-feature=\"sl\"",
            "data-feature=\"pw\"",
        ],
    );
    // A text model gets one text box, sent as the simple API's `text`.
    let text = get(&server, "/console/fragments/models/intent/try", None).await;
    assert_html(
        &text,
        200,
        &["data-mode=\"text\"", "<textarea", "data-feature=\"text\""],
    );
    // An image model gets a file input (sent as multipart), a tokenizer model a text box.
    let image = get(&server, "/console/fragments/models/gray_image/try", None).await;
    assert_html(
        &image,
        200,
        &[
            "data-mode=\"image\"",
            "type=\"file\"",
            "accept=\"image/jpeg,image/png,image/webp\"",
        ],
    );
    let tokenized = get(&server, "/console/fragments/models/minilm/try", None).await;
    assert_html(&tokenized, 200, &["data-mode=\"text\"", "<textarea"]);
    let (status, answer) = server
        .post_json("/predict/intent", &json!({"text": "hello there"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["prediction"][0]
            .as_str()
            .is_some_and(|l| l.starts_with("__label__")),
        "{answer}"
    );

    // Chart data: the server's own counters for this model, summed.
    for _ in 0..3 {
        let (status, body) = server
            .post_json(
                "/v1/models/iris_lr:predict",
                &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = server
        .post_json("/v1/models/iris_lr:predict", &json!({"instances": [[1.0]]}))
        .await;
    assert_eq!(status, 400);
    let metrics = get(&server, "/console/api/models/iris_lr/metrics", None).await;
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    assert!(metrics.content_type.starts_with("application/json"));
    let m: Value = serde_json::from_str(&metrics.body).unwrap();
    assert_eq!(m["model"], "iris_lr");
    assert_eq!(m["requests_total"], 4.0, "{m}");
    assert_eq!(m["errors_total"], 1.0, "{m}");
    assert_eq!(m["queue_length"], 0.0, "{m}");
    let buckets = m["latency_seconds"]["buckets"].as_array().unwrap();
    assert!(!buckets.is_empty(), "{m}");
    // The last bucket is +Inf (JSON null) and holds every request.
    assert_eq!(buckets.last().unwrap()[0], Value::Null, "{m}");
    assert!(m["batch_size"]["count"].as_f64().unwrap() >= 1.0, "{m}");
    let other = get(&server, "/console/api/models/iris_dt/metrics", None).await;
    let other: Value = serde_json::from_str(&other.body).unwrap();
    assert_eq!(other["requests_total"], 0.0, "{other}");
    assert_eq!(
        get(&server, "/console/api/models/no_such_model/metrics", None)
            .await
            .status,
        404
    );

    // Jobs: the list and an unknown job.
    assert_html(
        &get(&server, "/console/jobs", None).await,
        200,
        &["/console/fragments/jobs"],
    );
    assert_html(
        &get(&server, "/console/fragments/jobs", None).await,
        200,
        &["No jobs yet"],
    );
    assert_html(
        &get(&server, "/console/fragments/jobs/nope", None).await,
        404,
        &["nope"],
    );
    assert_html(
        &get(&server, "/console/jobs/nope", None).await,
        404,
        &["nope"],
    );

    // The docs page (Swagger UI, which sends requests) is never framed by another
    // site either; the description it reads is no page.
    let docs = get(&server, "/docs/", None).await;
    assert_eq!(docs.status, 200, "{}", docs.body);
    assert_eq!(docs.frame_policy, "frame-ancestors 'self' SAMEORIGIN");
    assert_eq!(get(&server, "/openapi.json", None).await.status, 200);

    // A fragment's text is escaped: a model name with markup shows as text.
    let weird = "a<b>";
    let a = get(&server, &format!("/console/models/{}", "a%3Cb%3E"), None).await;
    assert_eq!(a.status, 404);
    assert!(
        !a.body.contains(weird)
            && (a.body.contains("a&lt;b&gt;") || a.body.contains("a&#60;b&#62;")),
        "{}",
        a.body
    );

    server.stop().await;
}

/// The models list shows a model's newest events: the recent events are newest
/// first, as `/models/status` gives them, and the list keeps the first three (it
/// showed the oldest three of the last ten, so a stop and a reload never appeared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_models_list_shows_a_models_newest_events() {
    let dir = repo();
    let server = TestServer::start(&dir.path().join("models")).await;
    let (code, body) = server
        .post_json("/stop_deployment/iris_lr", &json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = server
        .post_json("/reload_model?modelname=iris_lr", &json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, status) = server.get("/models/status").await;
    let events = status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == "iris_lr")
        .map(|m| m["recent_events"].as_array().unwrap().clone())
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"stop") && kinds.contains(&"reload"),
        "{kinds:?}"
    );

    let models = get(&server, "/console/fragments/models", None).await;
    assert_eq!(models.status, 200, "{}", models.body);
    let row = models
        .body
        .split("data-model=\"iris_lr\"")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("no iris_lr row in {}", models.body));
    let shown: Vec<&str> = row
        .split("<div><time>")
        .skip(1)
        .map(|e| e.split("</div>").next().unwrap())
        .collect();
    assert_eq!(shown.len(), 3, "{row}");
    // The newest event first: the reload (or a state change after it), never one
    // of the first load's.
    let newest = &events[0];
    let expected = match (
        newest["detail"]["from"].as_str(),
        newest["detail"]["to"].as_str(),
    ) {
        (Some(from), Some(to)) => format!("state {from} → {to}"),
        _ => newest["kind"].as_str().unwrap().to_string(),
    };
    assert!(
        shown[0].contains(&expected),
        "{shown:?} does not start with {expected:?}"
    );
    let position = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap();
    assert!(
        position("reload") < 3 && shown.iter().any(|e| e.contains("reload")),
        "{shown:?} {kinds:?}"
    );
}

fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let entry = |name: &str, token: &str, scopes: &str| {
        format!(
            "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{scopes}]\n",
            to_hex(&token_sha256(token))
        )
    };
    let path = dir.join("tokens.toml");
    std::fs::write(
        &path,
        entry("full", FULL, "\"inference\", \"management\", \"metrics\"")
            + &entry("reader", READER, "\"inference\""),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_shells_are_open_and_data_is_not() {
    let dir = repo();
    let (first_worker_port, _) = common::child::worker_ports(1);
    let settings = ferroserve::settings::Settings {
        auth_tokens: Some(tokens_file(dir.path())),
        metrics_require_token: true,
        // Workers on (none is started: nothing is deployed).
        worker_ports: Some((first_worker_port, first_worker_port)),
        worker_binary: Some(env!("CARGO_BIN_EXE_ferroserve").into()),
        state_dir: Some(dir.path().join("state")),
        ..test_settings(&dir.path().join("models"))
    };
    let server = TestServer::start_with(settings).await;

    // Shells and assets: no token needed, and no data in them.
    assert_eq!(get(&server, "/", None).await.location, "/console");
    assert_html(&get(&server, "/console", None).await, 200, &["token-form"]);
    assert_html(&get(&server, "/console/jobs", None).await, 200, &[]);
    assert_eq!(
        get(&server, "/console/assets/console.js", None)
            .await
            .status,
        200
    );
    // Without a token the shell cannot tell whether a model exists.
    let unknown = get(&server, "/console/models/no_such_model", None).await;
    assert_html(&unknown, 200, &["/console/fragments/models/no_such_model"]);
    // Nor whether a job exists.
    let unknown = get(&server, "/console/jobs/no_such_job", None).await;
    assert_html(&unknown, 200, &["/console/fragments/jobs/no_such_job"]);
    // A name that no model or job can have is refused, token or not: the page
    // would build its requests (sent with the token) from it, and a crafted link
    // could point them at another route (`../../../v1/models/m/predictions`, whose
    // JSON holds what any inference client wrote).
    for (path, says) in [
        (
            "/console/models/..%2F..%2F..%2Fv1%2Fmodels%2Firis_lr%2Fpredictions",
            "not a valid model name",
        ),
        ("/console/models/.hidden", "not a valid model name"),
        (
            "/console/models/..%2F..%2F..%2Freload_model",
            "not a valid model name",
        ),
        (
            "/console/jobs/..%2F..%2F..%2Fv1%2Fmodels%2Firis_lr%2Fpredictions",
            "not a valid job id",
        ),
        ("/console/jobs/a.b", "not a valid job id"),
    ] {
        for token in [None, Some(FULL)] {
            let refused = get(&server, path, token).await;
            assert_html(&refused, 404, &["Not found", says]);
            assert!(!refused.body.contains("hx-get=\"/console/fragments/models/"));
            assert!(!refused.body.contains("hx-get=\"/console/fragments/jobs/"));
        }
    }
    // Workers are on: the deploy panel says a deployment gets its own process.
    let page = get(&server, "/console/models/iris_lr", None).await;
    assert!(
        page.body.contains("its own worker process")
            && !page.body.contains("deployments run in this process"),
        "{}",
        page.body
    );
    // With one, the data fragment says it.
    assert_eq!(
        get(
            &server,
            "/console/fragments/models/no_such_model",
            Some(READER)
        )
        .await
        .status,
        404
    );

    // Data: 401 without a token, the scope each route's REST twin needs with one.
    for path in [
        "/console/fragments/models",
        "/console/fragments/models/iris_lr",
        "/console/fragments/models/iris_lr/try",
        "/console/fragments/jobs",
        "/console/api/models/iris_lr/metrics",
    ] {
        let a = get(&server, path, None).await;
        assert_eq!(a.status, 401, "{path}: {}", a.body);
        assert!(!a.body.contains("AVAILABLE"), "{path}");
        let bad = get(&server, path, Some("fst_not-a-token")).await;
        assert_eq!(bad.status, 401, "{path}");
        assert_eq!(get(&server, path, Some(FULL)).await.status, 200, "{path}");
    }
    let models = get(&server, "/console/fragments/models", Some(READER)).await;
    assert_html(&models, 200, &["data-model=\"iris_lr\"", "AVAILABLE"]);
    // Jobs are management data, the chart data is metrics.
    assert_eq!(
        get(&server, "/console/fragments/jobs", Some(READER))
            .await
            .status,
        403
    );
    assert_eq!(
        get(&server, "/console/api/models/iris_lr/metrics", Some(READER))
            .await
            .status,
        403
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_jobs_page_shows_the_cv_table_and_confusion_matrix() {
    use common::jobs;
    let env = jobs::env();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(root_path("examples/models/iris_sklearn/1/expected.json"))
            .unwrap(),
    )
    .unwrap();
    let labels = expected["sklearn_predict"].as_array().unwrap();
    let mut csv = format!("{},species\n", jobs::FEATURES.join(","));
    for (i, row) in jobs::iris_rows(60).iter().enumerate() {
        let values: Vec<String> = row.iter().map(f64::to_string).collect();
        let label = labels[i % labels.len()].as_str().unwrap();
        csv.push_str(&format!("{},{label}\n", values.join(",")));
    }
    std::fs::write(env.data.join("iris.csv"), csv).unwrap();
    let server = TestServer::start_with(jobs::settings(&env)).await;
    let features: Vec<Value> = jobs::FEATURES.iter().map(|f| json!({"key": f})).collect();
    let id = jobs::submit(
        &server,
        json!({"kind": "train", "spec": {
            "model": "trained",
            "source": {"path": "iris.csv"},
            "schema": {"label": {"key": "species"}, "features": features},
            "algorithm": {"name": "logistic_regression", "grid": {"C": [0.5, 1.0]}},
            "cv": {"folds": 3, "holdout": 0.3},
        }}),
    )
    .await;
    let job = jobs::finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");

    let list = get(&server, "/console/fragments/jobs", None).await;
    assert_html(
        &list,
        200,
        &[
            &format!("href=\"/console/jobs/{id}\""),
            "succeeded",
            "trained",
        ],
    );
    let page = get(&server, &format!("/console/jobs/{id}"), None).await;
    assert_html(&page, 200, &[&format!("/console/fragments/jobs/{id}")]);
    let detail = get(&server, &format!("/console/fragments/jobs/{id}"), None).await;
    assert_html(
        &detail,
        200,
        &[
            "data-finished=\"true\"",
            "Cross-validation",
            "(best)",
            "{&#34;C&#34;:0.5}",
            "hold-out accuracy",
            "class=\"confusion-chart\"",
            "<th scope=\"row\">setosa</th>",
        ],
    );
    // The matrix's counts add up to the hold-out rows.
    let holdout_rows = job["result"]["holdout"]["rows"].as_u64().unwrap();
    let matrix: Vec<Vec<u64>> =
        serde_json::from_value(job["result"]["holdout"]["confusion_matrix"].clone()).unwrap();
    assert_eq!(matrix.iter().flatten().sum::<u64>(), holdout_rows);
    let json_attr = serde_json::to_string(&matrix).unwrap();
    assert!(
        detail.body.contains(&json_attr),
        "{json_attr} not in {}",
        detail.body
    );

    server.stop().await;
}
