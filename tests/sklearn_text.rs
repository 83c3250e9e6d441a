//! scikit-learn text pipelines served over REST: a pickled
//! `Pipeline(TfidfVectorizer, LogisticRegression)` takes one document per row
//! (`{"instances": ["some text", ...]}`) and answers scikit-learn's own predictions
//! and probabilities, recorded by `make_text_fixtures.py` (scikit-learn 1.9.1).

mod common;

use common::{assert_close, install_model, root_path, TestServer};
use serde_json::{json, Value};

const SKL: &str = "crates/ferroserve-sklearn/tests/fixtures/sklearn/1.9.1";

fn expected(case: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root_path(&format!("{SKL}/{case}.json"))).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tfidf_logistic_regression_answers_like_sklearn() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "news",
        1,
        &root_path(&format!("{SKL}/text_tfidf_logreg.z3.joblib")),
    );
    // jieba-style input: Chinese words joined by spaces.
    install_model(
        repo.path(),
        "reviews_zh",
        1,
        &root_path(&format!("{SKL}/text_tfidf_logreg_zh.z3.joblib")),
    );
    let server = TestServer::start(repo.path()).await;

    let (status, meta) = server.get("/v2/models/news").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "BYTES", "shape": [-1]}])
    );

    for (model, case) in [
        ("news", "text_tfidf_logreg"),
        ("reviews_zh", "text_tfidf_logreg_zh"),
    ] {
        let exp = expected(case);
        let docs = &exp["input"]["docs"];
        let (status, body) = server
            .post_json(
                &format!("/v1/models/{model}:predict"),
                &json!({ "instances": docs }),
            )
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        let predictions = body["predictions"].as_array().unwrap();
        assert_eq!(predictions.len(), docs.as_array().unwrap().len());
        let n_classes = exp["classes"].as_array().unwrap().len();
        for (i, p) in predictions.iter().enumerate() {
            assert_eq!(p["predict"], exp["predict"][i], "{model} row {i}");
            for j in 0..n_classes {
                assert_close(
                    p["predict_proba"][j].as_f64().unwrap(),
                    exp["predict_proba"][i][j].as_f64().unwrap(),
                    1e-9,
                    &format!("{model} row {i} class {j}"),
                );
            }
        }
    }

    // Numbers are not text: a clear 400, not a panic.
    let (status, body) = server
        .post_json(
            "/v1/models/news:predict",
            &json!({"instances": [[1.0, 2.0]]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    server.stop().await;
}
