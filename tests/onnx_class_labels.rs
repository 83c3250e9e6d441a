//! An ONNX classifier's own class labels (the `classlabels_strings` /
//! `classlabels_int64s` of its ai.onnx.ml classifier node) name the classes over TF
//! Serving REST `:classify`, gRPC Classify and the simple API, as a scikit-learn
//! pickle's `classes_` do. Fixtures (`python/make_onnx_models.py --only
//! iris_str,iris_int,iris_lr_int`): iris_str, a LogisticRegression with string
//! classes (`LinearClassifier`); iris_int, a DecisionTreeClassifier with the integer
//! classes 1, 5 and 7 (`TreeEnsembleClassifier`, `classlabels_int64s`); iris_lr_int, a
//! LogisticRegression with those (`LinearClassifier`, `classlabels_ints`);
//! `expected.json` holds what scikit-learn and onnxruntime-Python answered.
//!
//! Without them, classes were named by their column ("0", "1", "2"): meaningless for
//! string classes, and wrong for integer classes that are not 0..n-1.

mod common;

use std::collections::HashMap;

use common::{assert_close, install_model, root_path, TestServer};
use ferroserve_proto::tensorflow as tf;
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec};
use serde_json::{json, Value};

/// Each fixture with the classes it names, as the simple API gives them (the labels'
/// type) and as classify gives them (text).
const CASES: [(&str, [&str; 3]); 3] = [
    ("iris_str", ["setosa", "versicolor", "virginica"]),
    ("iris_int", ["1", "5", "7"]),
    ("iris_lr_int", ["1", "5", "7"]),
];

fn expected(model: &str) -> Value {
    let path = root_path(&format!("tests/fixtures/onnx/{model}/expected.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rows(exp: &Value) -> Vec<Vec<f32>> {
    exp["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// A repository with both fixtures, and the scikit-learn pickle `iris_sklearn` (the
/// same estimator as iris_str, string classes) to compare the simple API with.
async fn server() -> (tempfile::TempDir, TestServer) {
    let repo = tempfile::tempdir().unwrap();
    for (model, _) in CASES {
        install_model(
            repo.path(),
            model,
            1,
            &root_path(&format!("tests/fixtures/onnx/{model}/model.onnx")),
        );
    }
    install_model(
        repo.path(),
        "iris_sklearn",
        1,
        &root_path("examples/models/iris_sklearn/1/model.joblib"),
    );
    let server = TestServer::start(repo.path()).await;
    (repo, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_names_the_models_own_classes() {
    let (_repo, server) = server().await;
    let mut client =
        PredictionServiceClient::connect(format!("http://{}", server.grpc_addr.unwrap()))
            .await
            .unwrap();
    for (model, labels) in CASES {
        let exp = expected(model);
        let rows = rows(&exp);
        let proba = &exp["onnxruntime"]["probabilities"];

        // TF Serving REST: the whole row as the one feature named like the input.
        let examples: Vec<Value> = rows.iter().map(|r| json!({ "input": r })).collect();
        let (status, body) = server
            .post_json(
                &format!("/v1/models/{model}:classify"),
                &json!({ "examples": examples }),
            )
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), rows.len(), "{model}: {body}");
        for (i, classes) in results.iter().enumerate() {
            let got: Vec<&str> = classes
                .as_array()
                .unwrap()
                .iter()
                .map(|pair| pair[0].as_str().unwrap())
                .collect();
            assert_eq!(got, labels, "{model} REST row {i}: {body}");
            for (j, pair) in classes.as_array().unwrap().iter().enumerate() {
                assert_close(
                    pair[1].as_f64().unwrap(),
                    proba[i][j].as_f64().unwrap(),
                    1e-6,
                    &format!("{model} REST row {i} class {j}"),
                );
            }
        }

        // gRPC Classify, the same.
        let example = |row: &[f32]| tf::Example {
            features: Some(tf::Features {
                feature: HashMap::from([(
                    "input".to_string(),
                    tf::Feature {
                        kind: Some(tf::feature::Kind::FloatList(tf::FloatList {
                            value: row.to_vec(),
                        })),
                    },
                )]),
            }),
        };
        let classified = client
            .classify(tfs::ClassificationRequest {
                model_spec: Some(ModelSpec {
                    name: model.into(),
                    ..Default::default()
                }),
                input: Some(tfs::Input {
                    kind: Some(tfs::input::Kind::ExampleList(tfs::ExampleList {
                        examples: rows.iter().map(|r| example(r)).collect(),
                    })),
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let classifications = classified.result.unwrap().classifications;
        assert_eq!(classifications.len(), rows.len(), "{model} gRPC");
        for (i, c) in classifications.iter().enumerate() {
            let got: Vec<&str> = c.classes.iter().map(|c| c.label.as_str()).collect();
            assert_eq!(got, labels, "{model} gRPC row {i}");
            for (j, class) in c.classes.iter().enumerate() {
                assert_close(
                    class.score as f64,
                    proba[i][j].as_f64().unwrap(),
                    1e-6,
                    &format!("{model} gRPC row {i} class {j}"),
                );
            }
        }
    }
    server.stop().await;
}

/// The simple API gives the classes, with the type of the model's labels, beside
/// the probabilities: as it does for a scikit-learn pickle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_api_gives_the_models_own_classes() {
    let (_repo, server) = server().await;
    let want = [
        ("iris_str", json!(["setosa", "versicolor", "virginica"])),
        ("iris_int", json!([1, 5, 7])),
        ("iris_lr_int", json!([1, 5, 7])),
    ];
    for (model, classes) in want {
        let exp = expected(model);
        let rows = rows(&exp);
        let (status, one) = server
            .post_json("/predict", &json!({"model_id": model, "features": rows[0]}))
            .await;
        assert_eq!(status, 200, "{model}: {one}");
        assert_eq!(
            one["prediction"], exp["sklearn_predict"][0],
            "{model}: {one}"
        );
        assert_eq!(one["classes"], classes, "{model}: {one}");
        let (status, many) = server
            .post_json("/predict", &json!({"model_id": model, "features": rows}))
            .await;
        assert_eq!(status, 200, "{model}: {many}");
        assert_eq!(
            many["prediction"], exp["sklearn_predict"],
            "{model}: {many}"
        );
        assert_eq!(many["classes"], classes, "{model}: {many}");
    }

    // The scikit-learn estimator iris_str was converted from answers the same classes.
    let row = &expected("iris_str")["rows"][0];
    let (status, sklearn) = server
        .post_json(
            "/predict",
            &json!({"model_id": "iris_sklearn", "features": row}),
        )
        .await;
    assert_eq!(status, 200, "{sklearn}");
    assert_eq!(
        sklearn["classes"],
        json!(["setosa", "versicolor", "virginica"]),
        "{sklearn}"
    );
    server.stop().await;
}
