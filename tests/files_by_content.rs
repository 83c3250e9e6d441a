//! Model files recognised by their content whatever their names, as the old
//! services named them (`lr_iris.model`, `name_question_1591259822.bin`).

mod common;

use common::{install_model, root_path, unwatched_settings, TestServer};
use serde_json::{json, Value};

const IRIS_SKLEARN: &str = "examples/models/iris_sklearn/1";
const IRIS_ONNX: &str = "examples/models/iris_lr/1/model.onnx";

fn expected() -> Value {
    let text =
        std::fs::read_to_string(root_path(&format!("{IRIS_SKLEARN}/expected.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn error_text(body: &Value) -> String {
    body["error"].as_str().unwrap_or_default().to_string()
}

/// The sklearn fixture's rows predicted by `model`, against scikit-learn's own answers.
async fn assert_predicts_like_sklearn(server: &TestServer, model: &str) {
    let exp = expected();
    let (status, body) = server
        .post_json(
            &format!("/v1/models/{model}:predict"),
            &json!({"instances": exp["rows"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let predictions = body["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), exp["rows"].as_array().unwrap().len());
    for (i, p) in predictions.iter().enumerate() {
        assert_eq!(p["predict"], exp["sklearn_predict"][i], "row {i}");
        for j in 0..3 {
            common::assert_close(
                p["predict_proba"][j].as_f64().unwrap(),
                exp["sklearn_predict_proba"][i][j].as_f64().unwrap(),
                1e-9,
                &format!("row {i} class {j}"),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_named_like_the_old_service_is_served_and_reloaded_by_file_name() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    let pickle = std::fs::read(root_path(&format!("{IRIS_SKLEARN}/model.joblib"))).unwrap();

    // The model id is the file name's stem; the file is stored under the canonical
    // name of its format.
    let (code, body) = server.upload(&[], "lr_iris.model", pickle).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["model_id"], "lr_iris", "{body}");
    assert_eq!(body["version"], 1, "{body}");
    assert!(repo.path().join("lr_iris/1/model.pkl").is_file());
    assert_predicts_like_sklearn(&server, "lr_iris").await;

    // Reloading by the file's name finds the model named by its stem.
    let r = server
        .client
        .get(server.url("/reload_model?modelname=lr_iris.model"))
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["served_versions"]["lr_iris"], json!([1]), "{body}");
    assert_eq!(body["message"], "model lr_iris reloaded", "{body}");

    // A name that is no model's, with or without its extension, is still 404.
    let r = server
        .client
        .get(server.url("/reload_model?modelname=nothing.model"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // An ONNX model named `.bin` is recognised too, stored as model.onnx.
    let onnx = std::fs::read(root_path(IRIS_ONNX)).unwrap();
    let (code, body) = server
        .upload(&[], "name_question_1591259822.bin", onnx)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["model_id"], "name_question_1591259822", "{body}");
    assert!(repo
        .path()
        .join("name_question_1591259822/1/model.onnx")
        .is_file());

    // A text file is refused whatever its name, saying what was expected, and
    // leaves nothing behind.
    let (code, body) = server
        .upload(&[], "model.bin", b"sepal,petal\n5.1,3.5\n".to_vec())
        .await;
    assert_eq!(code, 400, "{body}");
    let text = error_text(&body);
    assert!(
        text.contains("ONNX") && text.contains("pickle") && text.contains("joblib"),
        "{body}"
    );
    assert!(!repo.path().join("model").exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_directories_holding_one_file_of_any_name_are_served() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    // The ONNX model as the old service named it.
    let dir = root.join("name_question/1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        root_path(IRIS_ONNX),
        dir.join("name_question_1591259822.bin"),
    )
    .unwrap();
    std::fs::write(dir.join(".keep"), b"").unwrap(); // hidden files do not count
                                                     // A pickle named `.model`.
    let dir = root.join("lr_iris/1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        root_path(&format!("{IRIS_SKLEARN}/model.joblib")),
        dir.join("lr_iris.model"),
    )
    .unwrap();
    // A text file named like a model.
    let dir = root.join("text/1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.bin"), b"this is not a model\n").unwrap();
    // A known name keeps priority over other files.
    install_model(root, "both", 1, &root_path(IRIS_ONNX));
    std::fs::write(root.join("both/1/notes.txt"), b"trained on iris").unwrap();

    let server = TestServer::start(root).await;
    for model in ["name_question", "both"] {
        let (status, body) = server
            .post_json(
                &format!("/v1/models/{model}:predict"),
                &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
            )
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(body["predictions"].as_array().unwrap().len(), 1, "{body}");
    }
    let (status, meta) = server.get("/v2/models/name_question").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["platform"], "onnxruntime_onnx", "{meta}");
    assert_predicts_like_sklearn(&server, "lr_iris").await;

    // The text file is an ERROR version whose message says what was expected.
    let (status, body) = server.get("/v1/models/text").await;
    assert_eq!(status, 200, "{body}");
    let v = &body["model_version_status"][0];
    assert_eq!(v["state"], "END", "{body}");
    let message = v["status"]["error_message"].as_str().unwrap();
    assert!(
        message.contains("model.bin") && message.contains("ONNX") && message.contains("pickle"),
        "{message}"
    );
    assert!(!message.contains(&*root.to_string_lossy()), "{message}");
    let (status, body) = server
        .post_json(
            "/v1/models/text:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    server.stop().await;
}
