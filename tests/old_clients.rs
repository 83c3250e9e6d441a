//! The replaced services' own clients, unchanged (issue 11): the requests their users
//! send on the first day, as `requests` sends them, over a real socket.

mod common;

use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::auth::{to_hex, token_sha256};
use ferroserve::settings::Settings;
use serde_json::{json, Value};

const ROW: [f64; 4] = [5.1, 3.5, 1.4, 0.2];

fn load_json(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root_path(rel)).unwrap()).unwrap()
}

/// A repository with the example iris models (ONNX, int64 labels).
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in ["iris_lr", "iris_dt"] {
        install_model(
            dir.path(),
            m,
            1,
            &root_path(&format!("examples/models/{m}/1/model.onnx")),
        );
    }
    dir
}

/// Sends any method with any body and content type; answers status, headers and the
/// raw body text.
async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = server.client.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        server.url(path),
    );
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let r = request.body(body.to_string()).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

/// The body of an error as README promises it: a JSON object with a non-empty "error".
fn error_message(status: u16, headers: &reqwest::header::HeaderMap, text: &str) -> String {
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{status}: {headers:?}"
    );
    let body: Value =
        serde_json::from_str(text).unwrap_or_else(|_| panic!("{status}: not JSON: {text:?}"));
    let message = body["error"].as_str().unwrap_or_default().to_string();
    assert!(!message.is_empty(), "{status}: {body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_on_every_route_is_json() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    // Unknown routes, whatever the method.
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/nope/deeper"),
        ("GET", "/nope/"),
        ("DELETE", "/v2/models/iris_lr/infer/extra"),
        ("GET", "/v1/models/iris_lr/other"),
    ] {
        let (status, headers, text) = send(&server, method, path, None, "").await;
        assert_eq!(status, 404, "{method} {path}: {text}");
        error_message(status, &headers, &text);
    }
    // Known routes with the wrong method: 405, with Allow kept.
    for (method, path, allowed) in [
        ("GET", "/predict", "POST"),
        ("DELETE", "/predict/iris_lr", "GET"),
        ("PUT", "/v1/models/iris_lr:predict", "POST"),
        ("GET", "/v1/models/iris_lr:predict", "POST"),
        ("POST", "/v1/models/iris_lr", "GET"),
        ("GET", "/v2/models/iris_lr/infer", "POST"),
        ("POST", "/models/status", "GET"),
        ("GET", "/delete_model/iris_lr", "DELETE"),
    ] {
        let (status, headers, text) = send(&server, method, path, None, "").await;
        assert_eq!(status, 405, "{method} {path}: {text}");
        assert!(
            headers["allow"].to_str().unwrap().contains(allowed),
            "{method} {path}: {headers:?}"
        );
        let message = error_message(status, &headers, &text);
        assert!(
            message.contains(method) && message.contains(path),
            "{message}"
        );
    }
    // Extractor rejections: a path parameter that is not UTF-8.
    let (status, headers, text) = send(&server, "GET", "/predict/%FF%FE?a=1", None, "").await;
    assert_eq!(status, 400, "{text}");
    error_message(status, &headers, &text);
    // Errors that were JSON already stay as they were.
    let (status, headers, text) =
        send(&server, "POST", "/predict", Some("application/json"), "{").await;
    assert_eq!(status, 400);
    assert!(error_message(status, &headers, &text).contains("malformed JSON"));
    // Successes are untouched.
    let (status, _, text) = send(&server, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    assert!(!text.starts_with('{'));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_an_unknown_route_is_401_first_and_json() {
    let repo = repo();
    let tokens = tempfile::tempdir().unwrap();
    let token = "fst_old-clients-test-token";
    std::fs::write(
        tokens.path().join("tokens.toml"),
        format!(
            "[[token]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"inference\", \"management\"]\n",
            to_hex(&token_sha256(token))
        ),
    )
    .unwrap();
    let server = TestServer::start_with(Settings {
        auth_tokens: Some(tokens.path().join("tokens.toml")),
        ..test_settings(repo.path())
    })
    .await;
    let (status, headers, text) = send(&server, "GET", "/nope", None, "").await;
    assert_eq!(status, 401, "{text}");
    error_message(status, &headers, &text);
    let r = server
        .client
        .get(server.url("/nope"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("/nope"), "{body}");
    let r = server
        .client
        .get(server.url("/predict"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    server.stop().await;
}

const SKL: &str = "crates/ferroserve-sklearn/tests/fixtures/sklearn/1.9.1";

/// Parses a fixture field stored as a Python repr of a list.
fn py_list(exp: &Value, key: &str) -> Value {
    match &exp[key] {
        Value::String(s) => serde_json::from_str(&s.replace('\'', "\"")).unwrap(),
        other => other.clone(),
    }
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_is_epoch_seconds_and_integer_labels_stay_integers() {
    let repo = repo();
    let dt = repo.path().join("dt_int/1");
    std::fs::create_dir_all(&dt).unwrap();
    std::fs::copy(
        root_path(&format!("{SKL}/decision_tree_classifier_int.p5.pkl")),
        dt.join("model.pkl"),
    )
    .unwrap();
    let server = TestServer::start(repo.path()).await;

    // scikit-learn, classes [0, 1, 2] (int64).
    let exp = load_json(&format!("{SKL}/decision_tree_classifier_int.json"));
    let input = py_list(&exp, "input");
    let rows = input["rows"].as_array().unwrap();
    let predict = py_list(&exp, "predict");
    let before = now_seconds();
    let (status, one) = server
        .post_json(
            "/predict",
            &json!({"model_id": "dt_int", "features": rows[1]}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    // What the old clients do: `time.time() - r.json()["timestamp"]`.
    let timestamp = one["timestamp"]
        .as_f64()
        .expect("timestamp is a JSON number");
    assert!(one["timestamp"].is_number());
    let age = now_seconds() - timestamp;
    assert!((-1.0..60.0).contains(&age), "{one}");
    assert!(timestamp >= before.floor() - 1.0, "{one}");
    assert!(one["time"].as_str().unwrap().ends_with('Z'), "{one}");
    assert!(one["prediction"].is_i64(), "{one}");
    assert_eq!(one["prediction"], predict[1]);
    assert_eq!(one["classes"], json!([0, 1, 2]), "{one}");

    let (status, many) = server
        .post_json("/predict", &json!({"model_id": "dt_int", "features": rows}))
        .await;
    assert_eq!(status, 200, "{many}");
    assert_eq!(many["prediction"], predict);
    assert_eq!(many["classes"], json!([0, 1, 2]));

    // ONNX with int64 labels.
    let (status, one) = server
        .post_json("/predict", &json!({"model_id": "iris_lr", "features": ROW}))
        .await;
    assert_eq!(status, 200, "{one}");
    assert!(
        one["timestamp"].is_f64() || one["timestamp"].is_u64(),
        "{one}"
    );
    assert!(one["prediction"].is_i64(), "{one}");
    assert_eq!(one["prediction"], 0);
    if let Some(classes) = one.get("classes") {
        assert!(
            classes.as_array().unwrap().iter().all(Value::is_i64),
            "{one}"
        );
    }
    server.stop().await;
}

/// iris_lr again as `iris`, with the feature names of the old service's clients.
fn install_named_iris(repo: &std::path::Path) {
    install_model(
        repo,
        "iris",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    std::fs::write(
        repo.join("iris/config.toml"),
        "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n",
    )
    .unwrap();
}

async fn post_form(
    server_url: &str,
    client: &reqwest::Client,
    form: &[(&str, &str)],
) -> (u16, Value) {
    // What `requests.post(url, data={...})` sends: form-encoded, repeated keys for lists.
    let r = client.post(server_url).form(form).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_url_takes_the_old_direct_call_and_form_bodies() {
    let repo = repo();
    install_named_iris(repo.path());
    let server = TestServer::start(repo.path()).await;
    let (status, deployed) = server
        .post_json("/deploy", &json!({"model_id": "iris_lr"}))
        .await;
    assert_eq!(status, 200, "{deployed}");
    let service_url = deployed["service_url"].as_str().unwrap().to_string();
    assert_eq!(service_url, server.url("/predict/iris_lr"));
    let client = &server.client;

    // `requests.post(service_url, json={"features": [...]})`
    let r = client
        .post(&service_url)
        .json(&json!({"features": ROW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let one: Value = r.json().await.unwrap();
    assert_eq!(one["model_id"], "iris_lr");
    assert_eq!(one["prediction"], 0, "{one}");
    // `requests.post(f"{service_url}/infer", json={"features": [[...], [...]]})`
    let r = client
        .post(format!("{service_url}/infer"))
        .json(&json!({"features": [ROW, [6.7, 3.0, 5.2, 2.3]], "version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let many: Value = r.json().await.unwrap();
    assert_eq!(many["prediction"], json!([0, 2]), "{many}");
    // A body naming another model than the path is refused, as JSON.
    let r = client
        .post(&service_url)
        .json(&json!({"model_id": "iris_dt", "features": ROW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("iris_dt"), "{err}");

    // `requests.post(service_url, data={"features": [5.1, 3.5, 1.4, 0.2]})`
    let row = [
        ("features", "5.1"),
        ("features", "3.5"),
        ("features", "1.4"),
        ("features", "0.2"),
    ];
    for url in [service_url.clone(), format!("{service_url}/infer")] {
        let (status, body) = post_form(&url, client, &row).await;
        assert_eq!(status, 200, "{url}: {body}");
        assert_eq!(body["prediction"], 0, "{body}");
    }
    // A cross-site page may call inference (the cross-site rule is management's).
    let r = client
        .post(format!("{service_url}/infer"))
        .header("origin", "http://elsewhere.example")
        .header("sec-fetch-site", "cross-site")
        .form(&row)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // `requests.post(f"{base}/predict", data={"model_id": "iris_lr", "features": [...]})`
    let mut with_model = vec![("model_id", "iris_lr")];
    with_model.extend(row);
    let (status, body) = post_form(&server.url("/predict"), client, &with_model).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prediction"], 0);
    // `data={"model_id": "iris", "sepal_length": 5.1, ...}`: named features.
    let (status, body) = post_form(
        &server.url("/predict"),
        client,
        &[
            ("model_id", "iris"),
            ("sepal_length", "6.7"),
            ("sepal_width", "3.0"),
            ("petal_length", "5.2"),
            ("petal_width", "2.3"),
            ("version", "1"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prediction"], 2, "{body}");
    // `data={"model_id": "iris_lr", "features": json.dumps([[...], [...]])}`
    let (status, body) = post_form(
        &server.url("/predict"),
        client,
        &[
            ("model_id", "iris_lr"),
            ("features", "[[5.1,3.5,1.4,0.2],[6.7,3.0,5.2,2.3]]"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prediction"], json!([0, 2]));
    // Bad forms are 400s that say why.
    for (form, why) in [
        (vec![("model_id", "iris")], "no features"),
        (
            vec![
                ("model_id", "iris"),
                ("features", "1"),
                ("sepal_length", "2"),
            ],
            "not both",
        ),
        (vec![("features", "1")], "model_id"),
        (
            vec![
                ("model_id", "iris"),
                ("sepal_length", "x"),
                ("sepal_length", "y"),
            ],
            "twice",
        ),
        (vec![("model_id", "iris"), ("features", "[1, 2")], "JSON"),
    ] {
        let (status, body) = post_form(&server.url("/predict"), client, &form).await;
        assert_eq!(status, 400, "{form:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(why),
            "{form:?}: {body}"
        );
    }
    server.stop().await;
}

/// A named-feature value as a query or form value.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_features_feed_a_model_with_one_input_per_column() {
    let repo = repo();
    // A Pipeline(ColumnTransformer(OneHotEncoder on string columns, numeric columns
    // by name), LogisticRegression): one input per column, strings and numbers.
    let mixed = repo.path().join("bank/1");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(
        root_path(&format!("{SKL}/ct_onehot_logreg.p5.pkl")),
        mixed.join("model.pkl"),
    )
    .unwrap();
    let server = TestServer::start(repo.path()).await;
    let exp = load_json(&format!("{SKL}/ct_onehot_logreg.json"));
    let input = py_list(&exp, "input");
    let columns = input["columns"].as_array().unwrap();
    let predict = py_list(&exp, "predict");
    let proba = py_list(&exp, "predict_proba");
    let n = predict.as_array().unwrap().len();
    let rows: Vec<usize> = (0..n)
        .filter(|&i| columns.iter().all(|c| !c["values"][i].is_null()))
        .collect();
    assert!(rows.len() >= 5);
    let object = |i: usize| -> serde_json::Map<String, Value> {
        columns
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["values"][i].clone(),
                )
            })
            .collect()
    };
    let check_proba = |got: &Value, i: usize| {
        for j in 0..2 {
            common::assert_close(
                got[j].as_f64().unwrap(),
                proba[i][j].as_f64().unwrap(),
                1e-9,
                &format!("row {i} class {j}"),
            );
        }
    };

    // One object of named features.
    for &i in &rows {
        let (status, one) = server
            .post_json(
                "/predict",
                &json!({"model_id": "bank", "features": object(i)}),
            )
            .await;
        assert_eq!(status, 200, "{one}");
        assert_eq!(one["prediction"], predict[i], "row {i}: {one}");
        check_proba(&one["probabilities"], i);
        assert_eq!(one["classes"], json!(["no", "yes"]));
    }
    // A list of such objects.
    let objects: Vec<Value> = rows.iter().map(|&i| Value::Object(object(i))).collect();
    let (status, many) = server
        .post_json(
            "/predict",
            &json!({"model_id": "bank", "features": objects}),
        )
        .await;
    assert_eq!(status, 200, "{many}");
    for (k, &i) in rows.iter().enumerate() {
        assert_eq!(many["prediction"][k], predict[i]);
        check_proba(&many["probabilities"][k], i);
    }
    // The GET form with query parameters, and a form-encoded body.
    let i = rows[0];
    let pairs: Vec<(String, String)> = object(i)
        .iter()
        .map(|(k, v)| (k.clone(), as_text(v)))
        .collect();
    let r = server
        .client
        .get(server.url("/predict/bank"))
        .query(&pairs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["prediction"], predict[i], "{got}");
    check_proba(&got["probabilities"], i);
    let mut form = vec![("model_id".to_string(), "bank".to_string())];
    form.extend(pairs.clone());
    let r = server
        .client
        .post(server.url("/predict"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["prediction"], predict[i], "{got}");
    // Positional: one value per input, in the model's input order.
    let (_, meta) = server.get("/v2/models/bank").await;
    let order: Vec<&str> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let o = object(i);
    let positional: Vec<Value> = order.iter().map(|n| o[*n].clone()).collect();
    let (status, got) = server
        .post_json(
            "/predict",
            &json!({"model_id": "bank", "features": positional}),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["prediction"], predict[i]);

    // Missing and unknown columns are 400s that name them.
    let mut partial = object(i);
    let first = columns[0]["name"].as_str().unwrap().to_string();
    partial.remove(&first);
    partial.insert("shoe_size".into(), json!(42));
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "bank", "features": partial}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains(&first) && message.contains("shoe_size"),
        "{body}"
    );
    // A string where the column takes numbers.
    let mut wrong = object(i);
    wrong.insert("age".into(), json!("old"));
    let (status, body) = server
        .post_json("/predict", &json!({"model_id": "bank", "features": wrong}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("age"), "{body}");
    server.stop().await;
}
