//! scikit-learn pickles and joblib files served through the REST APIs, matching
//! scikit-learn's own predictions (the fixtures' expected outputs).

mod common;

use common::{assert_close, install_model, root_path, TestServer};
use serde_json::{json, Value};

fn load_json(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root_path(rel)).unwrap()).unwrap()
}

const SKL: &str = "crates/ferroserve-sklearn/tests/fixtures/sklearn/1.9.1";

/// Fixture JSON stores some fields as Python reprs of lists; parse either form.
fn field(exp: &Value, key: &str) -> Value {
    match &exp[key] {
        Value::String(s) => serde_json::from_str(
            &s.replace('\'', "\"")
                .replace("None", "null")
                .replace("nan", "NaN"),
        )
        .unwrap_or_else(|_| panic!("cannot parse {key}: {s}")),
        other => other.clone(),
    }
}

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    install_model(
        dir.path(),
        "iris_sklearn",
        1,
        &root_path("examples/models/iris_sklearn/1/model.joblib"),
    );
    let ct = dir.path().join("mixed/1");
    std::fs::create_dir_all(&ct).unwrap();
    std::fs::copy(
        root_path(&format!("{SKL}/ct_onehot_logreg.p5.pkl")),
        ct.join("model.pkl"),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joblib_wrapper_dict_serves_like_sklearn() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let exp = load_json("examples/models/iris_sklearn/1/expected.json");

    let (status, meta) = server.get("/v2/models/iris_sklearn").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["platform"], "sklearn");
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "FP64", "shape": [-1, 4]}])
    );
    assert_eq!(
        meta["outputs"][0],
        json!({"name": "predict", "datatype": "BYTES", "shape": [-1]})
    );
    assert_eq!(
        meta["outputs"][1],
        json!({"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]})
    );

    let (status, body) = server
        .post_json(
            "/v1/models/iris_sklearn:predict",
            &json!({"instances": exp["rows"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for (i, p) in body["predictions"].as_array().unwrap().iter().enumerate() {
        assert_eq!(p["predict"], exp["sklearn_predict"][i]);
        for j in 0..3 {
            assert_close(
                p["predict_proba"][j].as_f64().unwrap(),
                exp["sklearn_predict_proba"][i][j].as_f64().unwrap(),
                1e-9,
                &format!("row {i} class {j}"),
            );
        }
    }

    let n = exp["rows"].as_array().unwrap().len();
    let (status, body) = server
        .post_json(
            "/v2/models/iris_sklearn/infer",
            &json!({"inputs": [{"name": "input", "shape": [n, 4], "datatype": "FP64", "data": exp["rows"]}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["name"], "predict");
    assert_eq!(body["outputs"][0]["data"], exp["sklearn_predict"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_transformer_takes_named_columns() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let exp = load_json(&format!("{SKL}/ct_onehot_logreg.json"));
    let input = field(&exp, "input");
    let columns = input["columns"].as_array().unwrap();
    let predict = field(&exp, "predict");
    let proba = field(&exp, "predict_proba");
    let n = predict.as_array().unwrap().len();
    // Rows without a missing value (JSON has no NaN for the row format).
    let rows: Vec<usize> = (0..n)
        .filter(|&i| columns.iter().all(|c| !c["values"][i].is_null()))
        .collect();
    assert!(rows.len() >= 5);

    let instances: Vec<Value> = rows
        .iter()
        .map(|&i| {
            Value::Object(
                columns
                    .iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap().to_string(),
                            c["values"][i].clone(),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    let (status, body) = server
        .post_json("/v1/models/mixed:predict", &json!({"instances": instances}))
        .await;
    assert_eq!(status, 200, "{body}");
    for (k, &i) in rows.iter().enumerate() {
        let p = &body["predictions"][k];
        assert_eq!(p["predict"], predict[i], "row {i}");
        for j in 0..2 {
            assert_close(
                p["predict_proba"][j].as_f64().unwrap(),
                proba[i][j].as_f64().unwrap(),
                1e-9,
                "proba",
            );
        }
    }

    // KServe V2: one input per column.
    let (_, meta) = server.get("/v2/models/mixed").await;
    let inputs: Vec<Value> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|spec| {
            let name = spec["name"].as_str().unwrap();
            let col = columns.iter().find(|c| c["name"] == name).unwrap();
            let data: Vec<Value> = rows.iter().map(|&i| col["values"][i].clone()).collect();
            json!({"name": name, "shape": [rows.len(), 1], "datatype": spec["datatype"], "data": data})
        })
        .collect();
    let (status, body) = server
        .post_json("/v2/models/mixed/infer", &json!({"inputs": inputs}))
        .await;
    assert_eq!(status, 200, "{body}");
    let want: Vec<Value> = rows.iter().map(|&i| predict[i].clone()).collect();
    assert_eq!(body["outputs"][0]["data"], Value::Array(want));

    // A missing column is a 400 that names it.
    let mut partial = instances[0].clone();
    let first = columns[0]["name"].as_str().unwrap().to_string();
    partial.as_object_mut().unwrap().remove(&first);
    let (status, body) = server
        .post_json("/v1/models/mixed:predict", &json!({"instances": [partial]}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains(&first), "{body}");
    server.stop().await;
}

/// A column the pipeline was fitted with but no transformer reads (`income`, `color`
/// here): scikit-learn requires it in the DataFrame, so a full record must work (it
/// was a 400, "the model has no input"); leaving it out works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_the_model_drops_may_be_given_or_left_out() {
    let dir = tempfile::tempdir().unwrap();
    install_model(
        dir.path(),
        "dropped",
        1,
        &root_path(&format!("{SKL}/ct_dropped_column_logreg.joblib")),
    );
    let server = TestServer::start(dir.path()).await;
    let exp = load_json(&format!("{SKL}/ct_dropped_column_logreg.json"));
    let input = field(&exp, "input");
    let columns = input["columns"].as_array().unwrap();
    let predict = field(&exp, "predict");
    let rows: Vec<usize> = (0..predict.as_array().unwrap().len())
        .filter(|&i| columns.iter().all(|c| !c["values"][i].is_null()))
        .collect();
    let record = |i: usize, keep: &dyn Fn(&str) -> bool| -> Value {
        Value::Object(
            columns
                .iter()
                .filter(|c| keep(c["name"].as_str().unwrap()))
                .map(|c| {
                    (
                        c["name"].as_str().unwrap().to_string(),
                        c["values"][i].clone(),
                    )
                })
                .collect(),
        )
    };
    let want: Vec<Value> = rows.iter().map(|&i| predict[i].clone()).collect();
    for (what, keep) in [
        ("every column", &(|_: &str| true) as &dyn Fn(&str) -> bool),
        ("the used ones", &|name: &str| {
            matches!(name, "age" | "city")
        }),
    ] {
        let instances: Vec<Value> = rows.iter().map(|&i| record(i, keep)).collect();
        assert_eq!(
            instances[0].as_object().unwrap().len() > 2,
            what == "every column"
        );
        let (status, body) = server
            .post_json(
                "/v1/models/dropped:predict",
                &json!({"instances": instances}),
            )
            .await;
        assert_eq!(status, 200, "{what}: {body}");
        let got: Vec<Value> = body["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["predict"].clone())
            .collect();
        assert_eq!(got, want, "{what}");
    }
    // Not a column of the model at all: still refused.
    let mut other = record(rows[0], &|_| true);
    other
        .as_object_mut()
        .unwrap()
        .insert("colour".into(), json!("red"));
    let (status, body) = server
        .post_json("/v1/models/dropped:predict", &json!({"instances": [other]}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("colour"), "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pickle_is_an_error_state_not_code_execution() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path().join("evil/1");
    std::fs::create_dir_all(&dir).unwrap();
    // GLOBAL os.system, a command, REDUCE: what `pickle.loads` would execute.
    let canary = repo.path().join("canary");
    let cmd = format!("touch {}", canary.display());
    let mut payload = b"\x80\x02cos\nsystem\nq\x00X".to_vec();
    payload.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    payload.extend_from_slice(cmd.as_bytes());
    payload.extend_from_slice(b"q\x01\x85q\x02Rq\x03.");
    std::fs::write(dir.join("model.pkl"), payload).unwrap();
    install_model(
        repo.path(),
        "good",
        1,
        &root_path("examples/models/iris_sklearn/1/model.joblib"),
    );
    let server = TestServer::start(repo.path()).await;
    let (_, body) = server.get("/v1/models/evil").await;
    let v = &body["model_version_status"][0];
    assert_eq!(v["state"], "END");
    assert!(
        v["status"]["error_message"]
            .as_str()
            .unwrap()
            .contains("os.system"),
        "{v}"
    );
    assert!(!canary.exists(), "the payload must never run");
    let (status, _) = server
        .post_json(
            "/v1/models/good:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// The user's own wrapper class (`LogisticRegressionTrain` holding the estimator in
/// `self.model`): refused without `[sklearn] wrapper_attribute`, served with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapper_object_pickle_is_served_only_with_the_opt_in() {
    const WRAP: &str = "crates/ferroserve-sklearn/tests/fixtures/wrapper";
    let repo = tempfile::tempdir().unwrap();
    for name in ["plain", "opted"] {
        let dir = repo.path().join(name).join("1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            root_path(&format!("{WRAP}/lr_wrapper.p2.pkl")),
            dir.join("model.pkl"),
        )
        .unwrap();
    }
    std::fs::write(
        repo.path().join("opted/config.toml"),
        "[sklearn]\nwrapper_attribute = \"model\"\n",
    )
    .unwrap();
    let exp = load_json(&format!("{WRAP}/lr_wrapper.json"));
    let server = TestServer::start(repo.path()).await;

    let (_, body) = server.get("/v1/models/plain").await;
    let v = &body["model_version_status"][0];
    assert_eq!(v["state"], "END", "{v}");
    assert!(
        v["status"]["error_message"]
            .as_str()
            .unwrap()
            .contains("LogisticRegressionTrain"),
        "{v}"
    );

    let (status, body) = server
        .post_json(
            "/v1/models/opted:predict",
            &json!({"instances": exp["input"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for (i, p) in body["predictions"].as_array().unwrap().iter().enumerate() {
        assert_eq!(p["predict"], exp["predict"][i]);
        for j in 0..3 {
            assert_close(
                p["predict_proba"][j].as_f64().unwrap(),
                exp["predict_proba"][i][j].as_f64().unwrap(),
                1e-9,
                &format!("row {i} class {j}"),
            );
        }
    }
    server.stop().await;
}

/// A missing value over TF Serving REST: a bare NaN (as Python's `json.dumps` writes
/// it) in a numeric column is NaN, which the pipeline imputes; in a text column it is
/// a 400 that says why (it was read as the text "NaN", and the model answered for
/// that unknown category instead of a missing value). The string "NaN" in quotes is
/// the text NaN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_nan_is_a_missing_number_and_refused_for_a_text_column() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let exp = load_json(&format!("{SKL}/ct_onehot_logreg.json"));
    let input = field(&exp, "input");
    let columns = input["columns"].as_array().unwrap();
    let predict = field(&exp, "predict");
    // Held-out row 1 misses its age (and nothing else); row 0's city is unknown.
    let value = |name: &str, i: usize| {
        columns.iter().find(|c| c["name"] == name).unwrap()["values"][i].clone()
    };
    assert!(value("age", 1).is_null());
    let row = |age: &str, city: &str| {
        format!(
            r#"{{"instances": [{{"age": {age}, "city": {city}, "income": {}, "color": {}}}]}}"#,
            value("income", 1),
            value("color", 1)
        )
    };
    let path = "/v1/models/mixed:predict";
    let post = |body: String| server.post_raw(path, body.into_bytes());

    // Numeric column: bare NaN and the string "NaN" are the missing value.
    let (status, bare) = post(row("NaN", &value("city", 1).to_string())).await;
    assert_eq!(status, 200, "{bare}");
    assert_eq!(bare["predictions"][0]["predict"], predict[1], "{bare}");
    let (status, quoted) = post(row("\"NaN\"", &value("city", 1).to_string())).await;
    assert_eq!(status, 200, "{quoted}");
    assert_eq!(quoted, bare);

    // Text column: the string "NaN" is a category (unknown here, as "berlin" is),
    // in a strict body and beside a bare NaN alike.
    let (status, unknown) = post(row("40.0", "\"berlin\"")).await;
    assert_eq!(status, 200, "{unknown}");
    for city in ["\"NaN\"", r#""\u0000NaN""#] {
        let (status, text) = post(row("40.0", city)).await;
        assert_eq!(status, 200, "{city}: {text}");
        assert_eq!(text, unknown, "{city}");
    }
    let (status, unknown_no_age) = post(row("\"NaN\"", "\"berlin\"")).await;
    assert_eq!(status, 200, "{unknown_no_age}");
    let (status, text_no_age) = post(row("NaN", "\"NaN\"")).await;
    assert_eq!(status, 200, "{text_no_age}");
    assert_eq!(text_no_age, unknown_no_age);

    // A bare NaN or infinity for the text column, in either format: refused.
    let columnar = |city: &str| {
        format!(
            r#"{{"inputs": {{"age": [40.0, NaN], "city": {city}, "income": [1.0, 2.0], "color": ["red", "blue"]}}}}"#
        )
    };
    for body in [
        row("40.0", "NaN"),
        row("NaN", "Infinity"),
        row("40.0", "-Infinity"),
        columnar("[NaN, NaN]"),
        columnar(r#"["paris", NaN]"#),
        columnar(r#"[[NaN], ["paris"]]"#),
    ] {
        let (status, answer) = post(body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains("\"city\"") && error.contains("cannot be missing"),
            "{body}: {error}"
        );
        assert!(!error.contains("u0000"), "{body}: {error}");
    }

    // Anywhere but a tensor, a bare literal is the body's own JSON error.
    for body in [
        r#"{"signature_name": NaN, "instances": [[NaN]]}"#,
        r#"{"threshold": NaN, "instances": [[NaN]]}"#,
    ] {
        let (status, answer) = post(body.to_string()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("malformed JSON"),
            "{body}: {answer}"
        );
    }
    server.stop().await;
}

/// scikit-learn's `LinearRegression` fitted on a target of one column (`y[:, :1]`)
/// predicts `(n_rows, 1)`: every API answers that shape (it was a flat `[n_rows]`),
/// and the metadata says `[-1, 1]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regressor_fitted_on_one_target_column_answers_a_column() {
    let dir = tempfile::tempdir().unwrap();
    install_model(
        dir.path(),
        "column",
        1,
        &root_path(&format!("{SKL}/linear_regression_column_target.z3.joblib")),
    );
    let server = TestServer::start(dir.path()).await;
    let exp = load_json(&format!("{SKL}/linear_regression_column_target.json"));
    let rows = exp["input"]["rows"].as_array().unwrap()[..3].to_vec();
    let want = exp["predict"].as_array().unwrap()[..3].to_vec();
    let check = |got: &Value, what: &str| {
        let got = got.as_array().unwrap_or_else(|| panic!("{what}: {got}"));
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.as_array().map(Vec::len), Some(1), "{what} row {i}: {g}");
            assert_close(
                g[0].as_f64().unwrap(),
                w[0].as_f64().unwrap(),
                1e-9,
                &format!("{what} row {i}"),
            );
        }
    };

    let (status, meta) = server.get("/v2/models/column").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(
        meta["outputs"][0],
        json!({"name": "predict", "datatype": "FP64", "shape": [-1, 1]})
    );
    let (status, meta) = server.get("/v1/models/column/metadata").await;
    assert_eq!(status, 200, "{meta}");
    let dims = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"]
        ["predict"]["tensor_shape"]["dim"];
    assert_eq!(dims[0]["size"], "-1", "{meta}");
    assert_eq!(dims[1]["size"], "1", "{meta}");

    let (status, body) = server
        .post_json("/v1/models/column:predict", &json!({"instances": rows}))
        .await;
    assert_eq!(status, 200, "{body}");
    check(&body["predictions"], "TF Serving rows");
    let (status, body) = server
        .post_json("/v1/models/column:predict", &json!({"inputs": rows}))
        .await;
    assert_eq!(status, 200, "{body}");
    check(&body["outputs"], "TF Serving columns");

    let (status, body) = server
        .post_json(
            "/v2/models/column/infer",
            &json!({"inputs": [{"name": "input", "shape": [3, 10], "datatype": "FP64", "data": rows}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([3, 1]), "{body}");
    let flat: Vec<Value> = body["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| json!([v]))
        .collect();
    check(&Value::Array(flat), "V2");

    let (status, body) = server
        .post_json("/predict", &json!({"model_id": "column", "features": rows}))
        .await;
    assert_eq!(status, 200, "{body}");
    check(&body["prediction"], "simple API");
    server.stop().await;
}

/// A pipeline whose first step is an encoder fitted on text (no ColumnTransformer):
/// fitted on a DataFrame it takes one BYTES input per column, by name; fitted on one
/// text column without a name, one text per row. Both answer what scikit-learn
/// answered (it took `input` FP64 `[-1, 2]`, so text was "not FP64" and numbers "must
/// hold text").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_first_pipeline_takes_text() {
    let dir = tempfile::tempdir().unwrap();
    install_model(
        dir.path(),
        "encoded",
        1,
        &root_path(&format!("{SKL}/pipeline_onehot_text_logreg.p2.pkl")),
    );
    install_model(
        dir.path(),
        "encoded_one",
        1,
        &root_path(&format!("{SKL}/pipeline_onehot_text_array_logreg.p5.pkl")),
    );
    let server = TestServer::start(dir.path()).await;

    let (status, meta) = server.get("/v2/models/encoded").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(
        meta["inputs"],
        json!([
            {"name": "city", "datatype": "BYTES", "shape": [-1, 1]},
            {"name": "color", "datatype": "BYTES", "shape": [-1, 1]},
        ])
    );
    let exp = load_json(&format!("{SKL}/pipeline_onehot_text_logreg.json"));
    let columns = exp["input"]["columns"].as_array().unwrap();
    let predict = exp["predict"].as_array().unwrap();
    // Rows without a missing value: a text column cannot carry one.
    let rows: Vec<usize> = (0..predict.len())
        .filter(|&i| columns.iter().all(|c| !c["values"][i].is_null()))
        .collect();
    assert!(rows.len() >= 5);
    let instances: Vec<Value> = rows
        .iter()
        .map(|&i| json!({"city": columns[0]["values"][i], "color": columns[1]["values"][i]}))
        .collect();
    let (status, body) = server
        .post_json(
            "/v1/models/encoded:predict",
            &json!({"instances": instances}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for (k, &i) in rows.iter().enumerate() {
        let p = &body["predictions"][k];
        assert_eq!(p["predict"], predict[i], "row {i}");
        for j in 0..2 {
            assert_close(
                p["predict_proba"][j].as_f64().unwrap(),
                exp["predict_proba"][i][j].as_f64().unwrap(),
                1e-9,
                "proba",
            );
        }
    }

    let (status, meta) = server.get("/v2/models/encoded_one").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "BYTES", "shape": [-1]}])
    );
    let exp = load_json(&format!("{SKL}/pipeline_onehot_text_array_logreg.json"));
    let (status, body) = server
        .post_json(
            "/v1/models/encoded_one:predict",
            &json!({"instances": exp["input"]["docs"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got: Vec<Value> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["predict"].clone())
        .collect();
    assert_eq!(Value::Array(got), exp["predict"]);
    server.stop().await;
}
