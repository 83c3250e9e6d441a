//! What the jobs tests share: a server environment (repository, state and data
//! directories), the iris fixture's rows and answers, and submitting a job and
//! waiting for it over REST.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferroserve::settings::Settings;
use serde_json::{json, Value};

use super::{install_model, root_path, test_settings, TestServer};

pub const FEATURES: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

pub struct Env {
    pub _dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub state: PathBuf,
    pub data: PathBuf,
}

/// A repository with the scikit-learn iris model as `iris`, named features.
pub fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    install_model(
        &repo,
        "iris",
        1,
        &root_path("examples/models/iris_sklearn/1/model.joblib"),
    );
    std::fs::write(
        repo.join("iris/config.toml"),
        format!("feature_names = {FEATURES:?}\n"),
    )
    .unwrap();
    let state = dir.path().join("state");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    Env {
        repo,
        state,
        data,
        _dir: dir,
    }
}

pub fn settings(env: &Env) -> Settings {
    Settings {
        state_dir: Some(env.state.clone()),
        data_dir: Some(env.data.clone()),
        ..test_settings(&env.repo)
    }
}

/// The fixture's rows (with the scikit-learn answers), repeated to `n`.
pub fn iris_rows(n: usize) -> Vec<Vec<f64>> {
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(root_path("examples/models/iris_sklearn/1/expected.json"))
            .unwrap(),
    )
    .unwrap();
    let rows: Vec<Vec<f64>> = exp["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    (0..n).map(|i| rows[i % rows.len()].clone()).collect()
}

pub async fn submit(server: &TestServer, body: Value) -> String {
    let (status, answer) = server.post_json("/v1/jobs", &body).await;
    assert_eq!(status, 202, "{answer}");
    answer["job_id"].as_str().unwrap().to_string()
}

/// Polls the job until `done` holds for it, within `limit`.
pub async fn wait_for(
    server: &TestServer,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (status, job) = server.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{job}");
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job never got there: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn finished(server: &TestServer, id: &str) -> Value {
    wait_for(server, id, Duration::from_secs(300), |j| {
        matches!(
            j["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    })
    .await
}

/// The model's own answers for `rows` over TF Serving REST: labels, probabilities.
pub async fn model_answers(server: &TestServer, rows: &[Vec<f64>]) -> Vec<(String, Vec<f64>)> {
    let (status, body) = server
        .post_json("/v1/models/iris:predict", &json!({ "instances": rows }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["predict"].as_str().unwrap().to_string(),
                p["predict_proba"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect(),
            )
        })
        .collect()
}
