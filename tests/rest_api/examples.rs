//! TF Serving's classify and regress over REST (tf.Example features), and an
//! unknown model's 404 in TF Serving's order of checks.

use super::*;

/// TF Serving REST `:classify` and `:regress` (issue 11), as TF Serving's REST API
/// takes them: named features per example, a shared context, `{"results": ...}` back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_rest_classify_and_regress() {
    let repo = repo();
    let names = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
    std::fs::write(
        repo.path().join("iris_lr/config.toml"),
        "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n",
    )
    .unwrap();
    install_model(
        repo.path(),
        "iris_sklearn",
        1,
        &root_path("examples/models/iris_sklearn/1/model.joblib"),
    );
    std::fs::write(
        repo.path().join("iris_sklearn/config.toml"),
        "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n",
    )
    .unwrap();
    let server = TestServer::start(repo.path()).await;
    let examples = |rows: &[Value]| -> Vec<Value> {
        rows.iter()
            .map(|r| {
                Value::Object(
                    names
                        .iter()
                        .zip(r.as_array().unwrap())
                        .map(|(n, v)| (n.to_string(), v.clone()))
                        .collect(),
                )
            })
            .collect()
    };

    // ONNX, int64 labels: every class with its probability, as onnxruntime gave it.
    let exp = expected("examples/models/iris_lr/1/expected.json");
    let rows = exp["rows"].as_array().unwrap();
    let (status, body) = server
        .post_json(
            "/v1/models/iris_lr/versions/1:classify",
            &json!({"signature_name": "serving_default", "examples": examples(rows)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let result = body["results"].as_array().unwrap();
    assert_eq!(result.len(), rows.len());
    for (i, classes) in result.iter().enumerate() {
        let classes = classes.as_array().unwrap();
        assert_eq!(classes.len(), 3, "{body}");
        for (j, pair) in classes.iter().enumerate() {
            assert_eq!(pair[0], json!(j.to_string()));
            let ort = exp["onnxruntime"]["probabilities"][i][j].as_f64().unwrap();
            assert_eq!(
                pair[1].as_f64().unwrap() as f32,
                ort as f32,
                "row {i} class {j}"
            );
            // In the float's fewest digits, as TF Serving writes it (it was the
            // double it converts to: 0.9789999723434448 for 0.979).
            let score = pair[1].as_f64().unwrap();
            let shortest: f64 = (score as f32).to_string().parse().unwrap();
            assert_eq!(score, shortest, "row {i} class {j}: {}", pair[1]);
        }
    }

    // scikit-learn, string labels; one feature shared through the context.
    let exp = expected("examples/models/iris_sklearn/1/expected.json");
    let rows = &exp["rows"].as_array().unwrap()[..4];
    let same_width: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut r = r.as_array().unwrap().clone();
            r[1] = json!(3.5);
            Value::Array(r)
        })
        .collect();
    let mut with_context = examples(&same_width);
    for e in &mut with_context {
        e.as_object_mut().unwrap().remove("sepal_width");
    }
    let (status, body) = server
        .post_json(
            "/v1/models/iris_sklearn:classify",
            &json!({"context": {"sepal_width": 3.5}, "examples": with_context}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, predicted) = server
        .post_json(
            "/v1/models/iris_sklearn:predict",
            &json!({"instances": same_width}),
        )
        .await;
    for (i, classes) in body["results"].as_array().unwrap().iter().enumerate() {
        let labels: Vec<&str> = classes
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_str().unwrap())
            .collect();
        assert_eq!(labels, ["setosa", "versicolor", "virginica"]);
        for j in 0..3 {
            assert_close(
                classes[j][1].as_f64().unwrap(),
                predicted["predictions"][i]["predict_proba"][j]
                    .as_f64()
                    .unwrap(),
                1e-6,
                &format!("row {i} class {j}"),
            );
        }
    }

    // Regress: a float64 regressor without feature names takes the row as one feature
    // named like its input.
    let exp = expected("tests/fixtures/onnx/diabetes_f64/expected.json");
    let rows = exp["rows"].as_array().unwrap();
    let regress_examples: Vec<Value> = rows.iter().map(|r| json!({"input": r})).collect();
    let (status, body) = server
        .post_json(
            "/v1/models/diabetes_f64:regress",
            &json!({"signature_name": "regression", "examples": regress_examples}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = f64s(&body["results"]);
    assert_eq!(got.len(), rows.len());
    for (i, (g, e)) in got.iter().zip(f64s(&exp["sklearn_predict"])).enumerate() {
        assert_close(*g, e, 1e-5, &format!("diabetes row {i}"));
    }

    // Errors are TF Serving's JSON errors with the right status.
    for (path, body, code) in [
        (
            "/v1/models/iris_lr:classify",
            json!({"examples": [{"sepal_length": 1.0}]}),
            400,
        ),
        (
            "/v1/models/iris_lr:classify",
            json!({"instances": [[1, 2, 3, 4]]}),
            400,
        ),
        ("/v1/models/iris_lr:classify", json!({"examples": []}), 400),
        (
            "/v1/models/iris_lr:regress",
            json!({"signature_name": "other", "examples": examples(&rows[..1])}),
            400,
        ),
        // A classifier does not regress (its label is no value), nor a regressor
        // classify (its value is no class).
        (
            "/v1/models/iris_lr:regress",
            json!({"examples": examples(&rows[..1])}),
            400,
        ),
        (
            "/v1/models/iris_sklearn:regress",
            json!({"examples": examples(&rows[..1])}),
            400,
        ),
        (
            "/v1/models/diabetes_f64:classify",
            json!({"examples": [{"input": vec![0.0; 10]}]}),
            400,
        ),
        (
            "/v1/models/nope:classify",
            json!({"examples": [{"a": 1}]}),
            404,
        ),
        (
            "/v1/models/iris_lr:explain",
            json!({"examples": [{"a": 1}]}),
            404,
        ),
    ] {
        let (status, answer) = server.post_json(path, &body).await;
        assert_eq!(status, code, "{path} {body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    // An FP64 regressor answering past FP32's range: said as such (it was called
    // a shape problem).
    let (status, answer) = server
        .post_json(
            "/v1/models/diabetes_f64:regress",
            &json!({"examples": [{"input": vec![1e38; 10]}]}),
        )
        .await;
    assert_error(status, &answer, 400, "past the range of the float");
    // A float feature past FP32's range is refused, as predict refuses it (it
    // became an infinity, and the scores null).
    let big = json!({"examples": [{"sepal_length": 1e39, "sepal_width": 3.5,
                                   "petal_length": 1.4, "petal_width": 0.2}]});
    for path in [
        "/v1/models/iris_lr:classify",
        "/v1/models/iris_sklearn:classify",
    ] {
        let (status, answer) = server.post_json(path, &big).await;
        assert_eq!(status, 400, "{path}: {answer}");
        let msg = answer["error"].as_str().unwrap();
        assert!(
            msg.contains("\"sepal_length\": 1e39 is out of range"),
            "{msg}"
        );
    }
    server.stop().await;
}

/// A server of the example models, `iris_lr` taking named features, for the
/// `:classify` / `:regress` tests below; `example` is one of its rows.
async fn iris_examples_server() -> (tempfile::TempDir, TestServer, Value) {
    let repo = repo();
    std::fs::write(
        repo.path().join("iris_lr/config.toml"),
        "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n",
    )
    .unwrap();
    let server = TestServer::start(repo.path()).await;
    let example = json!({"sepal_length": 6.7, "sepal_width": 3.0,
                         "petal_length": 5.2, "petal_width": 1});
    (repo, server, example)
}

/// The only field of a `:classify` / `:regress` answer, whatever its key.
fn only_field(answer: &Value) -> &Value {
    let fields = answer.as_object().unwrap();
    assert_eq!(fields.len(), 1, "{answer}");
    fields.values().next().unwrap()
}

/// The real tensorflow_model_server answers `:classify` and `:regress` with
/// `{"results": ...}` (its `kClassifyRegressResponseKey`; its REST guide says
/// `result`, which it never wrote).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_rest_classify_and_regress_answer_results() {
    let (_repo, server, example) = iris_examples_server().await;
    let (status, answer) = server
        .post_json(
            "/v1/models/iris_lr:classify",
            &json!({"examples": [example]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(only_field(&answer), &answer["results"], "{answer}");
    assert_eq!(
        answer["results"][0].as_array().unwrap().len(),
        3,
        "{answer}"
    );
    let (status, answer) = server
        .post_json(
            "/v1/models/diabetes_f64:regress",
            &json!({"examples": [{"input": vec![0.01; 10]}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(only_field(&answer), &answer["results"], "{answer}");
    assert_eq!(answer["results"].as_array().unwrap().len(), 1, "{answer}");
    server.stop().await;
}

/// Bare NaN and ±Infinity are float features, as TF Serving parses `:classify` and
/// `:regress` bodies (kParseNanAndInfFlag) and as `:predict` takes them (they were
/// 400 "malformed JSON body"); a bare word is still no text, nor a signature name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_rest_examples_take_bare_nan_and_infinity() {
    let (_repo, server, _) = iris_examples_server().await;
    let classify = "/v1/models/iris_lr:classify";
    let (status, answer) = server
        .post_raw(
            classify,
            br#"{"context": {"petal_width": Infinity}, "examples": [
                {"sepal_length": NaN, "sepal_width": 3.0, "petal_length": -Infinity}]}"#
                .to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        only_field(&answer)[0].as_array().unwrap().len(),
        3,
        "{answer}"
    );
    let mut row = ["0.01"; 10];
    row[3] = "NaN";
    let (status, answer) = server
        .post_raw(
            "/v1/models/diabetes_f64:regress",
            format!(r#"{{"examples": [{{"input": [{}]}}]}}"#, row.join(", ")).into_bytes(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(only_field(&answer).as_array().unwrap().len(), 1, "{answer}");
    for body in [
        &br#"{"examples": [{"sepal_length": ["a", NaN]}]}"#[..],
        br#"{"signature_name": NaN, "examples": [{"sepal_length": 1.0}]}"#,
    ] {
        let (status, answer) = server.post_raw(classify, body.to_vec()).await;
        assert_eq!(status, 400, "{answer}");
    }
    server.stop().await;
}

/// A boolean feature is int64 1 or 0, alone or in a list, as TF Serving's
/// `AddValueToFeature` reads it (it was 400 "must be a number, a string...").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_rest_examples_take_booleans_as_int64() {
    let (_repo, server, example) = iris_examples_server().await;
    let classify = "/v1/models/iris_lr:classify";
    let (status, plain) = server
        .post_json(classify, &json!({"examples": [example]}))
        .await;
    assert_eq!(status, 200, "{plain}");
    for value in [json!(true), json!([true])] {
        let mut with_bool = example.clone();
        with_bool["petal_width"] = value;
        let (status, answer) = server
            .post_json(classify, &json!({"examples": [with_bool]}))
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer, plain);
    }
    let mut with_false = example.clone();
    with_false["petal_width"] = json!(false);
    let mut with_zero = example.clone();
    with_zero["petal_width"] = json!(0);
    let (_, zero) = server
        .post_json(classify, &json!({"examples": [with_zero]}))
        .await;
    let (status, answer) = server
        .post_json(classify, &json!({"examples": [with_false]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, zero);
    assert_ne!(answer, plain);
    server.stop().await;
}

/// A feature both in the context and in an example is the example's, as over gRPC
/// (and in TF Serving, which merges the serialized context and example); REST
/// refused it with a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_rest_example_features_win_over_the_context() {
    let (_repo, server, example) = iris_examples_server().await;
    let classify = "/v1/models/iris_lr:classify";
    let (status, plain) = server
        .post_json(classify, &json!({"examples": [example]}))
        .await;
    assert_eq!(status, 200, "{plain}");
    let (status, answer) = server
        .post_json(
            classify,
            &json!({"context": {"petal_width": 9.5, "sepal_width": 3.0},
                    "examples": [example]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, plain);
    server.stop().await;
}

/// A model (or version) not served is a 404 in TF Serving's order: `:predict`
/// reads the JSON, then looks the model up, then reads the inputs (`{}` to an
/// unknown model was a 400 "missing instances"); `:classify` and `:regress` read
/// the whole body first. A served model refuses such a body with a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_rest_unknown_model_is_404_in_tf_servings_order() {
    let (_repo, server, _) = iris_examples_server().await;
    // (verb, body, its status on a model not served: TF Serving's order)
    let cases: [(&str, &[u8], u16); 7] = [
        // Predict: the JSON first, then the model, then the inputs.
        ("predict", b"{}", 404),
        ("predict", b"{\"instances\": \"x\"}", 404),
        ("predict", b"not json", 400),
        ("predict", b"[1, 2]", 400),
        // Classify and regress read the whole body first.
        ("classify", b"{\"examples\": []}", 400),
        ("regress", b"not json", 400),
        ("classify", b"{\"examples\": [{\"x\": 1}]}", 404),
    ];
    for (verb, body, status_elsewhere) in cases {
        let shown = String::from_utf8_lossy(body);
        let (status, answer) = server
            .post_raw(&format!("/v1/models/nosuch:{verb}"), body.to_vec())
            .await;
        assert_eq!(status, status_elsewhere, "{verb} {shown}: {answer}");
        if status_elsewhere == 404 {
            assert_error(status, &answer, 404, "nosuch");
        }
        let (status, answer) = server
            .post_raw(
                &format!("/v1/models/iris_lr/versions/7:{verb}"),
                body.to_vec(),
            )
            .await;
        assert_eq!(
            status, status_elsewhere,
            "{verb} {shown} version 7: {answer}"
        );
        if status_elsewhere == 404 {
            // A served model answers the body's own error.
            let (status, answer) = server
                .post_raw(&format!("/v1/models/iris_lr:{verb}"), body.to_vec())
                .await;
            assert_eq!(status, 400, "{verb} {shown}: {answer}");
        }
    }
    server.stop().await;
}
