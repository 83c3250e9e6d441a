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
