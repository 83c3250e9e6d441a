//! Features as training encodes them and serving reads them back: imputed missing
//! values, unknown categories, a feature that refuses missing values, one-feature
//! models, columns named by class, names that clash with the graph's own, number
//! labels.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_values_are_imputed_and_unknown_categories_encode_as_zeros() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let mut text = String::from("x,z,colour,y\n");
    for i in 0..60 {
        let x = if i % 10 == 3 {
            String::new()
        } else {
            (i % 7).to_string()
        };
        let colour = if i % 10 == 5 {
            ""
        } else {
            ["red", "green", "blue"][i % 3]
        };
        let y = if i % 7 > 2 { "b" } else { "a" };
        text.push_str(&format!("{x},{},{colour},{y}\n", i % 5));
    }
    std::fs::write(env.data.join("gaps.csv"), text).unwrap();
    let result = succeeded(
        &server,
        json!({"kind": "train", "spec": {
            "model": "gaps", "source": {"path": "gaps.csv"},
            "schema": {"label": {"key": "y"},
                       "features": [{"key": "x", "missing": "mean"}, {"key": "z"},
                                    {"key": "colour", "missing": "most_frequent"}],
                       "categorical": ["colour"]},
            "algorithm": {"name": "logistic_regression"},
            "cv": {"folds": 3}}}),
    )
    .await;
    assert_eq!(result["classes"], json!(["a", "b"]));
    let training: Value =
        serde_json::from_slice(&std::fs::read(env.repo.join("gaps/1/training.json")).unwrap())
            .unwrap();
    let encodings = training["encodings"].as_array().unwrap();
    assert!(encodings[0]["impute"].as_f64().is_some(), "{training}");
    assert!(encodings[1]["impute"].is_null(), "{training}");
    assert_eq!(encodings[2]["categories"], json!(["blue", "green", "red"]));
    let (mean, most_frequent) = (
        encodings[0]["impute"].as_f64().unwrap(),
        encodings[2]["impute"].as_str().unwrap(),
    );

    // The served model fills missing values as training did: a score job over the
    // training rows (empty cells included) answers the job's own predictions. The
    // graph left a missing colour all zeros, and an empty x failed the job.
    let scored = finished(
        &server,
        &submit(
            &server,
            json!({"kind": "score", "spec": {"model": "gaps", "source": {"path": "gaps.csv"},
                   "sink": {"path": "gaps_scored.csv"}}}),
        )
        .await,
    )
    .await;
    assert_eq!(scored["state"], "succeeded", "{scored}");
    let (header, rows) = read_csv(&env.data.join("gaps_scored.csv"));
    let label = header.iter().position(|h| h == "label").unwrap();
    let labels: Vec<Value> = rows.iter().map(|r| json!(r[label])).collect();
    let proba: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            header
                .iter()
                .zip(r)
                .filter(|(h, _)| h.starts_with("probabilities_"))
                .map(|(_, v)| v.parse().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(proba[0].len(), 2, "{header:?}");
    assert_same_as_job(&result, &labels, &proba);
    // /predict: null (and an empty string) is the imputed value, for a number and a
    // category alike; a feature the model does not impute still refuses null.
    let answer = |features: Value| {
        let server = &server;
        async move {
            let (status, got) = server
                .post_json(
                    "/predict",
                    &json!({"model_id": "gaps", "features": features}),
                )
                .await;
            (status, got)
        }
    };
    let (status, filled) = answer(json!({"x": mean, "z": 1, "colour": most_frequent})).await;
    assert_eq!(status, 200, "{filled}");
    for missing in [
        json!({"x": null, "z": 1, "colour": null}),
        json!({"x": "", "z": 1, "colour": ""}),
        json!({"x": " ", "z": 1, "colour": "  "}),
    ] {
        let (status, got) = answer(missing.clone()).await;
        assert_eq!(status, 200, "{missing}: {got}");
        assert_eq!(got["probabilities"], filled["probabilities"], "{missing}");
    }
    let (status, got) = answer(json!({"x": 1.0, "z": null, "colour": "red"})).await;
    assert_eq!(status, 400, "{got}");
    assert!(got["error"].as_str().unwrap().contains("\"z\""), "{got}");
    // Over TF Serving REST a missing category is "": the graph itself fills it.
    let (status, tfs) = server
        .post_json(
            "/v1/models/gaps:predict",
            &json!({"inputs": {"x": [[mean]], "z": [[1.0]], "colour": [[""]]}}),
        )
        .await;
    assert_eq!(status, 200, "{tfs}");
    let (a, b) = (
        tfs["outputs"]["probabilities"][0][1].as_f64().unwrap(),
        filled["probabilities"][1].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-6, "{tfs} {filled}");

    // A colour never seen: all zeros, still an answer.
    let (status, got) = server
        .post_json(
            "/predict",
            &json!({"model_id": "gaps", "features": {"x": 2.0, "z": 1, "colour": "purple"}}),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    let p: f64 = got["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((p - 1.0).abs() < 1e-5, "{got}");
    server.stop().await;
}

/// A feature whose `missing` policy is `error` (the default) refuses in scoring what
/// training refused: the text NaN for a number, an empty cell for a category (not
/// an unseen category). The failed job names the row and its file's line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_that_refuses_missing_values_refuses_them_in_scoring_too() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let mut text = String::from("x,cat,y\n");
    for i in 0..40 {
        let y = if i % 4 > 1 { "pos" } else { "neg" };
        text.push_str(&format!("{},{},{y}\n", i % 7, ["g", "h"][i % 2]));
    }
    std::fs::write(env.data.join("strict.csv"), text).unwrap();
    succeeded(
        &server,
        json!({"kind": "train", "spec": {
            "model": "strict", "source": {"path": "strict.csv"},
            "schema": {"label": {"key": "y"}, "features": [{"key": "x"}, {"key": "cat"}],
                       "categorical": ["cat"]},
            "algorithm": {"name": "logistic_regression"}, "cv": {"folds": 2}}}),
    )
    .await;
    let score = |file: &str| {
        json!({"kind": "score", "spec": {"model": "strict", "source": {"path": file},
               "sink": {"path": format!("{file}.out.csv")}}})
    };
    std::fs::write(env.data.join("nan.csv"), "x,cat\n1,g\nNaN,g\n").unwrap();
    let error = failed(&server, score("nan.csv")).await;
    assert!(
        error.starts_with(
            "row 2 (\"nan.csv\" line 3): column \"x\": feature value \"NaN\" is a missing value"
        ),
        "{error}"
    );
    std::fs::write(env.data.join("blank.csv"), "x,cat\n1,g\n2,\n").unwrap();
    let error = failed(&server, score("blank.csv")).await;
    assert!(
        error.starts_with("row 2 (\"blank.csv\" line 3): column \"cat\": the value is missing"),
        "{error}"
    );
    // A JSON-lines source names the line too.
    std::fs::write(
        env.data.join("nan.jsonl"),
        "{\"x\": 1, \"cat\": \"g\"}\n{\"x\": \"nan\", \"cat\": \"g\"}\n",
    )
    .unwrap();
    let error = failed(&server, score("nan.jsonl")).await;
    assert!(
        error.starts_with("row 2 (\"nan.jsonl\" line 2): "),
        "{error}"
    );
    assert!(!env.data.join("nan.csv.out.csv").exists());
    // The simple API refuses NaN as it refuses null.
    let (status, got) = server
        .post_json(
            "/predict",
            &json!({"model_id": "strict", "features": {"x": "NaN", "cat": "g"}}),
        )
        .await;
    assert_eq!(status, 400, "{got}");
    assert!(
        got["error"].as_str().unwrap().contains("missing value"),
        "{got}"
    );
    // Values that are there still score.
    std::fs::write(env.data.join("fine.csv"), "x,cat\n1,g\n2,h\n").unwrap();
    assert_eq!(succeeded(&server, score("fine.csv")).await["rows"], 2);
    server.stop().await;
}

/// A model trained on one feature takes it by name, as one of several features is
/// (its one input is `[N, 1]` named after the feature; it knew no feature names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_of_one_feature_serves_by_its_name() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    for (model, key, categorical, value) in [
        ("one_number", "x1", false, json!(0.25)),
        ("one_category", "region", true, json!("north")),
    ] {
        let categorical: Vec<&str> = if categorical { vec![key] } else { vec![] };
        succeeded(
            &server,
            json!({"kind": "train", "spec": {
                "model": model, "source": {"path": "three.csv"},
                "schema": {"label": {"key": "kind"}, "features": [{"key": key}],
                           "categorical": categorical},
                "algorithm": {"name": "logistic_regression"}, "cv": {"folds": 2}}}),
        )
        .await;
        let (status, named) = server
            .post_json(
                "/predict",
                &json!({"model_id": model, "features": {key: value.clone()}}),
            )
            .await;
        assert_eq!(status, 200, "{model}: {named}");
        let (status, positional) = server
            .post_json("/predict", &json!({"model_id": model, "features": [value]}))
            .await;
        assert_eq!(status, 200, "{model}: {positional}");
        assert_eq!(
            named["probabilities"], positional["probabilities"],
            "{model}"
        );
        let scored = finished(
            &server,
            &submit(
                &server,
                json!({"kind": "score", "spec": {"model": model, "source": {"path": "three.csv"},
                       "sink": {"path": format!("{model}.csv")}}}),
            )
            .await,
        )
        .await;
        assert_eq!(scored["state"], "succeeded", "{model}: {scored}");
    }
    server.stop().await;
}

/// A model trained on text labels scores into columns named by class
/// (`probabilities_a`), as a pickle's are (`predict_proba_setosa`): the classes
/// are its `training.json`'s (before, `probabilities_0`). A ground-truth `label`
/// column carried beside the model's own `label` output is refused at submission,
/// naming spec.carry (before, a JSON line kept one of the two values).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_model_scores_into_columns_named_by_class() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let mut spec = three_spec();
    spec["spec"]["algorithm"]["grid"] = json!({"C": [1.0]});
    spec["spec"]["cv"] = json!({"folds": 2});
    let result = succeeded(&server, spec).await;
    assert_eq!(result["classes"], json!(["a", "b", "c"]));
    let score = |carry: Value, source: &str, sink: &str| {
        json!({"kind": "score", "spec": {"model": "three", "source": {"path": source},
               "sink": {"path": sink}, "carry": carry}})
    };
    let id = submit(&server, score(json!(["kind"]), "three.csv", "scores.csv")).await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let columns = json!([
        "kind",
        "label",
        "probabilities_a",
        "probabilities_b",
        "probabilities_c"
    ]);
    assert_eq!(job["result"]["columns"], columns, "{job}");
    let (header, rows) = read_csv(&env.data.join("scores.csv"));
    assert_eq!(json!(header), columns);
    assert_eq!(rows.len(), 900);
    // The saved graph names its classes (ONNX metadata): the simple API's answer
    // says which probability is which, as for a scikit-learn classifier.
    let (status, answer) = server
        .post_json(
            "/predict",
            &json!({"model_id": "three",
                    "features": {"x1": -0.4148, "x2": 4.5297, "x3": 8.2517, "region": "east"}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["classes"], json!(["a", "b", "c"]), "{answer}");

    let three = std::fs::read_to_string(env.data.join("three.csv")).unwrap();
    std::fs::write(
        env.data.join("truth.csv"),
        three.replacen(",kind\n", ",label\n", 1),
    )
    .unwrap();
    for carry in [json!(["label"]), json!(["probabilities_b"])] {
        let (status, answer) = server
            .post_json(
                "/v1/jobs",
                &score(carry.clone(), "truth.csv", "truth.jsonl"),
            )
            .await;
        assert_eq!(status, 400, "{carry}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("spec.carry: carry column {}", carry[0])),
            "{error}"
        );
    }
    assert!(!env.data.join("truth.jsonl").exists());
    server.stop().await;
}

/// The saved graph names its own values (the numeric block, each one-hot block,
/// the design matrix) apart from every feature: features called `features`,
/// `numeric_imputed` or `job_onehot` train and serve (before, the job failed after
/// its whole cross-validation and refit with "Duplicate definition of name").
/// A feature named like one of the graph's outputs is refused at submission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_may_have_the_names_of_the_graphs_own_values() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let numeric = [
        "features",
        "numeric_columns",
        "numeric_imputed",
        "numeric_scaled",
        "job_encoded",
        "job_shape",
    ];
    let categorical = ["job", "job_onehot", "job_imputed"];
    let mut text = format!("{},{},y\n", numeric.join(","), categorical.join(","));
    for i in 0..60 {
        let x = |k: usize| ((i * (k + 3) + k) % 11) as f64 / 2.0;
        let numbers: Vec<String> = (0..numeric.len())
            // A few gaps, which the mean fills (an Imputer in the graph).
            .map(|k| match (i % 13 == 5, k) {
                (true, 0) => String::new(),
                _ => x(k).to_string(),
            })
            .collect();
        let job = ["admin", "blue", "tech"][i % 3];
        let job = if i % 17 == 4 { "" } else { job };
        let y = if x(0) + x(2) > 5.0 { "yes" } else { "no" };
        text.push_str(&format!(
            "{},{job},{},{},{y}\n",
            numbers.join(","),
            ["p", "q"][i % 2],
            ["r", "s", "t", "u"][i % 4],
        ));
    }
    std::fs::write(env.data.join("odd.csv"), &text).unwrap();
    let features: Vec<Value> = numeric
        .iter()
        .chain(&categorical)
        .map(|k| json!({"key": k, "missing": if *k == "features" { "mean" } else if *k == "job" { "most_frequent" } else { "error" }}))
        .collect();
    let spec = json!({"kind": "train", "spec": {
        "model": "odd", "source": {"path": "odd.csv"},
        "schema": {"label": {"key": "y"}, "features": features, "categorical": categorical},
        "algorithm": {"name": "logistic_regression"}, "cv": {"folds": 2}}});
    let result = succeeded(&server, spec.clone()).await;
    assert_eq!(result["classes"], json!(["no", "yes"]));
    // The served model answers the first row as the job's own model did.
    let (header, rows) = read_csv(&env.data.join("odd.csv"));
    let row: serde_json::Map<String, Value> = header
        .iter()
        .zip(&rows[0])
        .filter(|(h, _)| *h != "y")
        .map(|(h, v)| match numeric.contains(&h.as_str()) {
            true => (h.clone(), json!(v.parse::<f64>().unwrap())),
            false => (h.clone(), json!(v)),
        })
        .collect();
    let (status, got) = server
        .post_json("/predict", &json!({"model_id": "odd", "features": row}))
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["prediction"], result["sample_predictions"]["labels"][0]);
    for (c, p) in got["probabilities"].as_array().unwrap().iter().enumerate() {
        let own = result["sample_predictions"]["probabilities"][0][c]
            .as_f64()
            .unwrap();
        assert!((p.as_f64().unwrap() - own).abs() < 1e-5, "{got}");
    }

    // The graph's outputs keep their names: a feature may not have one.
    for output in ["label", "probabilities"] {
        let mut body = spec.clone();
        body["spec"]["schema"]["features"][2]["key"] = json!(output);
        let (status, answer) = server.post_json("/v1/jobs", &body).await;
        assert_eq!(status, 400, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!(
                "spec.schema.features[2].key: \"{output}\" is the name of one of the saved \
                 model's outputs"
            )),
            "{error}"
        );
    }
    server.stop().await;
}

/// A label column of numbers gives the same classes from every format, as pandas
/// reads them: the CSV text `1` and `1.0` and the JSON float 1.0 are the integer
/// class 1 (before, the CSV gave three classes, "0", "1" and "1.0").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_labels_give_the_same_classes_from_every_format() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let (mut csv, mut jsonl) = (String::from("x,y\n"), String::new());
    for i in 0..40 {
        let x = (i % 10) as f64;
        let y = ["0", "1", "1.0", "0.0"][i % 4];
        csv.push_str(&format!("{x},{y}\n"));
        jsonl.push_str(&format!(
            "{}\n",
            json!({"x": x, "y": y.parse::<f64>().unwrap()})
        ));
    }
    std::fs::write(env.data.join("numbers.csv"), csv).unwrap();
    std::fs::write(env.data.join("numbers.jsonl"), jsonl).unwrap();
    for (model, path) in [("from_csv", "numbers.csv"), ("from_jsonl", "numbers.jsonl")] {
        let result = succeeded(
            &server,
            json!({"kind": "train", "spec": {
                "model": model, "source": {"path": path},
                "schema": {"label": {"key": "y"}, "features": [{"key": "x"}]},
                "algorithm": {"name": "logistic_regression"}, "cv": {"folds": 2}}}),
        )
        .await;
        assert_eq!(result["classes"], json!([0, 1]), "{path}: {result}");
        let (status, got) = server
            .post_json(
                "/predict",
                &json!({"model_id": model, "features": {"x": 3}}),
            )
            .await;
        assert_eq!(status, 200, "{got}");
        assert!(got["prediction"].is_i64(), "{path}: {got}");
    }
    server.stop().await;
}
