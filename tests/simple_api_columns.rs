//! The simple API feeding an ONNX model with one input per column (issue 11, item 2):
//! a ColumnTransformer(OneHotEncoder on string columns, numeric columns passed
//! through) + LogisticRegression exported by skl2onnx with one `[N, 1]` input per
//! column (`python/make_onnx_models.py`, `bank_columns`). Named features, a list of
//! such objects and the GET query form must each build every column's input and
//! answer what scikit-learn answered.

mod common;

use common::{install_model, root_path, TestServer};
use serde_json::{json, Map, Value};

const FIXTURE: &str = "tests/fixtures/onnx/bank_columns";
const COLUMNS: [&str; 4] = ["age", "job", "marital", "balance"];

struct Expected {
    doc: Value,
}

impl Expected {
    fn load() -> Expected {
        let text = std::fs::read_to_string(root_path(&format!("{FIXTURE}/expected.json"))).unwrap();
        Expected {
            doc: serde_json::from_str(&text).unwrap(),
        }
    }

    fn rows(&self) -> usize {
        self.doc["sklearn_predict"].as_array().unwrap().len()
    }

    /// Row `i` as the old client sends it: `{"age": 41.0, "job": "admin.", ...}`.
    fn object(&self, i: usize) -> Map<String, Value> {
        COLUMNS
            .iter()
            .map(|c| (c.to_string(), self.doc["columns"][c][i].clone()))
            .collect()
    }

    fn check(&self, got: &Value, i: usize, what: &str) {
        assert_eq!(
            got["prediction"], self.doc["sklearn_predict"][i],
            "{what}, row {i}: {got}"
        );
        for j in 0..2 {
            let got = got["probabilities"][j].as_f64().unwrap();
            // scikit-learn computes in float64, the ONNX graph in float32: equal to
            // float32's precision, absolutely (small probabilities included), to
            // scikit-learn's answer and to onnxruntime-Python's.
            for (whose, expected) in [
                ("scikit-learn", &self.doc["sklearn_predict_proba"]),
                (
                    "onnxruntime-Python",
                    &self.doc["onnxruntime"]["probabilities"],
                ),
            ] {
                let expected = expected[i][j].as_f64().unwrap();
                assert!(
                    (got - expected).abs() <= 1e-6,
                    "{what}, row {i}, class {j}: {got} != {whose}'s {expected}"
                );
            }
        }
    }
}

/// Query-string text of a JSON value: numbers as written, strings bare.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnx_one_input_per_column_from_named_features() {
    let repo = tempfile::tempdir().unwrap();
    let dest = install_model(
        repo.path(),
        "bank",
        1,
        &root_path(&format!("{FIXTURE}/model.onnx")),
    );
    assert_eq!(dest.file_name().unwrap(), "model.onnx");
    let server = TestServer::start(repo.path()).await;
    let expected = Expected::load();
    let n = expected.rows();
    assert!(n >= 10);
    let predictions: Vec<&str> = (0..n)
        .map(|i| expected.doc["sklearn_predict"][i].as_str().unwrap())
        .collect();
    assert!(
        predictions.contains(&"yes") && predictions.contains(&"no"),
        "the fixture exercises both classes"
    );

    // The model really has one input per column.
    let (status, meta) = server.get("/v2/models/bank").await;
    assert_eq!(status, 200, "{meta}");
    let mut inputs: Vec<&str> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    inputs.sort_unstable();
    let mut columns = COLUMNS.to_vec();
    columns.sort_unstable();
    assert_eq!(inputs, columns, "{meta}");

    // One object of named features per request.
    for i in 0..n {
        let (status, got) = server
            .post_json(
                "/predict",
                &json!({"model_id": "bank", "features": expected.object(i)}),
            )
            .await;
        assert_eq!(status, 200, "{got}");
        expected.check(&got, i, "one object");
    }

    // A list of such objects.
    let objects: Vec<Value> = (0..n).map(|i| Value::Object(expected.object(i))).collect();
    let (status, many) = server
        .post_json(
            "/predict",
            &json!({"model_id": "bank", "features": objects}),
        )
        .await;
    assert_eq!(status, 200, "{many}");
    for i in 0..n {
        let row = json!({
            "prediction": many["prediction"][i],
            "probabilities": many["probabilities"][i],
        });
        expected.check(&row, i, "list of objects");
    }

    // The GET form with query parameters.
    for i in [0, n / 2, n - 1] {
        let pairs: Vec<(String, String)> = expected
            .object(i)
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
        expected.check(&got, i, "GET query");
    }

    // A category never seen in training is ignored by the encoder, as in
    // scikit-learn (handle_unknown="ignore"); a missing column is a 400 naming it.
    let mut unseen = expected.object(0);
    unseen.insert("job".into(), json!("astronaut"));
    let (status, got) = server
        .post_json("/predict", &json!({"model_id": "bank", "features": unseen}))
        .await;
    assert_eq!(status, 200, "{got}");
    let mut partial = expected.object(0);
    partial.remove("marital");
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "bank", "features": partial}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("marital"),
        "{body}"
    );
    // A positional row short of a value is told how many the model takes (it was
    // sent to set input_name, which it does not need).
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "bank", "features": [65, "retired", "single"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("give each row {} values", columns.len())),
        "{body}"
    );
    server.stop().await;
}

/// A JSON boolean is 1 or 0 to a numeric column, as it always was (a pandas bool
/// column); to a text column it was fed as "1" or "0", a prediction for a category
/// nobody sent, with no error: it is a 400 naming the feature now, on `/predict`
/// and on the old service's `/predict/`. A boolean `feature_defaults` value for a
/// text column is the config's mistake, told as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boolean_for_a_text_column_is_refused_and_a_number_column_takes_it_as_1() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "bank",
        1,
        &root_path(&format!("{FIXTURE}/model.onnx")),
    );
    // TOML booleans: `age` (a number) takes 1, `marital` (text) is refused when used.
    std::fs::write(
        repo.path().join("bank/config.toml"),
        "[feature_defaults]\nage = true\nmarital = false\n",
    )
    .unwrap();
    let server = TestServer::start(repo.path()).await;
    let expected = Expected::load();
    let row = expected.object(0);
    let predict = |features: Value| {
        let server = &server;
        async move {
            server
                .post_json(
                    "/predict",
                    &json!({"model_id": "bank", "features": features}),
                )
                .await
        }
    };

    // The probe's request: a wrong answer with a 200 before.
    let (status, body) = predict(json!({
        "age": 41, "job": true, "marital": "married", "balance": 52000
    }))
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "feature \"job\" is a boolean (true), and the model's input \"job\" takes text: \
         send it as a string",
        "{body}"
    );
    // By position too, in the model's input order.
    let (status, meta) = server.get("/v2/models/bank").await;
    assert_eq!(status, 200, "{meta}");
    let positional: Vec<Value> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| match s["name"].as_str().unwrap() {
            "job" => json!(false),
            name => row[name].clone(),
        })
        .collect();
    let (status, body) = predict(json!(positional)).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("feature \"job\" is a boolean (false)"),
        "{body}"
    );

    // A numeric column takes true as 1: the answer for age 1.
    let mut one = row.clone();
    one.insert("age".into(), json!(1));
    let (status, by_number) = predict(Value::Object(one)).await;
    assert_eq!(status, 200, "{by_number}");
    let mut yes = row.clone();
    yes.insert("age".into(), json!(true));
    let (status, by_boolean) = predict(Value::Object(yes)).await;
    assert_eq!(status, 200, "{by_boolean}");
    assert_eq!(by_boolean["prediction"], by_number["prediction"]);
    assert_eq!(by_boolean["probabilities"], by_number["probabilities"]);
    // So does the default `age = true`.
    let mut no_age = row.clone();
    no_age.remove("age");
    let (status, by_default) = predict(Value::Object(no_age)).await;
    assert_eq!(status, 200, "{by_default}");
    assert_eq!(by_default["probabilities"], by_number["probabilities"]);

    // The default `marital = false`, used, is the config's error (500), named.
    let mut no_marital = row.clone();
    no_marital.remove("marital");
    let (status, body) = predict(Value::Object(no_marital)).await;
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("feature_defaults gives feature \"marital\" the boolean false")
            && error.contains("write the default as a string"),
        "{body}"
    );

    // The old service's route reads a record the same way.
    let mut record = row.clone();
    record.insert("job".into(), json!(true));
    let (status, body) = server
        .post_json("/predict/", &json!({"modelkey": "bank", "record": record}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("feature \"job\" is a boolean (true)"),
        "{body}"
    );
    server.stop().await;
}
