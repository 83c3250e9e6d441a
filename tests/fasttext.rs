//! fastText classifiers served natively (issue 15): every fixture of
//! `tests/fixtures/fasttext/` (made by python/make_fasttext_models.py with the
//! fasttext package) answers the package's own labels and probabilities over KServe
//! V2, TF Serving REST and the simple API; a Chinese model with
//! `[preprocess] segmenter = "jieba"` answers raw text as the old Flask service did
//! (`model.predict(" ".join(jieba.cut(text)))`, a list of sentences per request);
//! bad input is a 400 and a hostile file an ERROR version with a clear message.

mod common;

use common::{install_model, root_path, TestServer};
use serde_json::{json, Value};

const FT: &str = "tests/fixtures/fasttext";

fn expected() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root_path(&format!("{FT}/expected.json"))).unwrap(),
    )
    .unwrap()
}

fn install(repo: &std::path::Path, name: &str, file: &str, config: &str) {
    let dest = install_model(repo, name, 1, &root_path(&format!("{FT}/{file}")));
    // Served under the names the version directory knows.
    let canonical = if file.ends_with(".ftz") {
        "model.ftz"
    } else {
        "model.bin"
    };
    std::fs::rename(&dest, dest.with_file_name(canonical)).unwrap();
    if !config.is_empty() {
        std::fs::write(repo.join(name).join("config.toml"), config).unwrap();
    }
}

/// The k=3 cases (threshold 0) of a fixture whose text is not empty.
fn cases(fixture: &Value, k: i64) -> Vec<(String, Vec<String>, Vec<f64>)> {
    fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["k"] == k && c["threshold"] == 0.0 && c["text"] != "")
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_string(),
                c["labels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_str().unwrap().to_string())
                    .collect(),
                c["probabilities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_f64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

fn check(
    what: &str,
    labels: &Value,
    probabilities: &Value,
    want_labels: &[String],
    want_probs: &[f64],
) {
    let labels: Vec<&str> = labels
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {labels}"))
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(labels, want_labels, "{what}");
    let probs = probabilities.as_array().unwrap();
    assert_eq!(probs.len(), want_probs.len(), "{what}");
    for (p, w) in probs.iter().zip(want_probs) {
        let p = p.as_f64().unwrap();
        assert!((p - w).abs() <= 1e-5, "{what}: {p} vs {w}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_answers_as_the_fasttext_package_over_every_api() {
    let expected = expected();
    let repo = tempfile::tempdir().unwrap();
    let names: Vec<String> = expected
        .as_object()
        .unwrap()
        .keys()
        .filter(|n| *n != "zh")
        .cloned()
        .collect();
    for name in &names {
        let file = expected[name]["file"].as_str().unwrap();
        install(repo.path(), name, file, "[fasttext]\nk = 3\n");
        install(repo.path(), &format!("{name}_k1"), file, "");
    }
    let server = TestServer::start(repo.path()).await;

    let (status, meta) = server.get("/v2/models/softmax").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(
        meta["inputs"],
        json!([{"name": "text", "datatype": "BYTES", "shape": [-1]}])
    );
    assert_eq!(
        meta["outputs"][0],
        json!({"name": "labels", "datatype": "BYTES", "shape": [-1, 3]})
    );

    for name in &names {
        let fixture = &expected[name];
        let three = cases(fixture, 3);
        let texts: Vec<&str> = three.iter().map(|c| c.0.as_str()).collect();
        let n = texts.len();

        // KServe V2: BYTES in, labels [n, 3] and probabilities [n, 3] out (row-major).
        let (status, body) = server
            .post_json(
                &format!("/v2/models/{name}/infer"),
                &json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [n], "data": texts}]}),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        let out = |o: &str| {
            body["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == o)
                .unwrap()
                .clone()
        };
        let (labels, probs) = (out("labels"), out("probabilities"));
        assert_eq!(labels["shape"], json!([n, 3]), "{name}");
        for (i, (text, want_l, want_p)) in three.iter().enumerate() {
            let cols = want_l.len();
            let l = json!(labels["data"].as_array().unwrap()[i * 3..i * 3 + cols]);
            let p = json!(probs["data"].as_array().unwrap()[i * 3..i * 3 + cols]);
            check(&format!("v2 {name} {text:?}"), &l, &p, want_l, want_p);
        }

        // TF Serving REST, row format.
        let (status, body) = server
            .post_json(
                &format!("/v1/models/{name}:predict"),
                &json!({"instances": texts}),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        for ((text, want_l, want_p), row) in
            three.iter().zip(body["predictions"].as_array().unwrap())
        {
            let cols = want_l.len();
            let l = json!(row["labels"].as_array().unwrap()[..cols]);
            let p = json!(row["probabilities"].as_array().unwrap()[..cols]);
            check(&format!("tfs {name} {text:?}"), &l, &p, want_l, want_p);
        }

        // The simple API, one text and a list, with the model's default k = 1.
        let one = cases(fixture, 1);
        let (text, want_l, want_p) = &one[0];
        let (status, body) = server
            .post_json(
                "/predict",
                &json!({"model_id": format!("{name}_k1"), "text": text}),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        check(
            &format!("simple {name} {text:?}"),
            &body["prediction"],
            &body["probabilities"],
            want_l,
            want_p,
        );
        let texts: Vec<&str> = one.iter().map(|c| c.0.as_str()).collect();
        let (status, body) = server
            .post_json(
                "/predict",
                &json!({"model_id": format!("{name}_k1"), "texts": texts}),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        for ((text, want_l, want_p), (l, p)) in one.iter().zip(
            body["prediction"]
                .as_array()
                .unwrap()
                .iter()
                .zip(body["probabilities"].as_array().unwrap()),
        ) {
            check(
                &format!("simple texts {name} {text:?}"),
                l,
                p,
                want_l,
                want_p,
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_jieba_service_request_gets_a_label_per_sentence() {
    let expected = expected();
    let zh = &expected["zh"];
    let repo = tempfile::tempdir().unwrap();
    install(
        repo.path(),
        "intent",
        "zh.bin",
        "[preprocess]\nsegmenter = \"jieba\"\n",
    );
    let server = TestServer::start(repo.path()).await;

    let segmented = zh["segmented"].as_array().unwrap();
    let sentences: Vec<&str> = segmented
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    // Raw Chinese sentences in, as the old client sent them; the server segments.
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "intent", "texts": sentences}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let predictions = body["prediction"].as_array().unwrap();
    assert_eq!(predictions.len(), sentences.len());
    for (i, case) in segmented.iter().enumerate() {
        let want_l: Vec<String> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        let want_p: Vec<f64> = case["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        check(
            &format!("{:?}", case["text"]),
            &predictions[i],
            &body["probabilities"][i],
            &want_l,
            &want_p,
        );
    }
    // The same over V2.
    let (status, body) = server
        .post_json(
            "/v2/models/intent/infer",
            &json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [sentences.len()], "data": sentences}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let labels = &body["outputs"][0]["data"];
    for (i, case) in segmented.iter().enumerate() {
        assert_eq!(labels[i], case["labels"][0], "{:?}", case["text"]);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_400_with_a_clear_message() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "ft", "softmax.bin", "");
    install_model(
        repo.path(),
        "numeric",
        1,
        &root_path("crates/ferroserve-sklearn/tests/fixtures/sklearn/1.9.1/decision_tree_classifier.z3.joblib"),
    );
    let server = TestServer::start(repo.path()).await;
    let message = |b: &Value| b["error"].as_str().unwrap_or_default().to_string();

    // Invalid UTF-8, sent as TF Serving's base64 bytes.
    let (status, body) = server
        .post_json(
            "/v1/models/ft:predict",
            &json!({"instances": [{"b64": "//4="}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("not valid UTF-8"), "{body}");

    for empty in ["", "   "] {
        let (status, body) = server
            .post_json("/predict", &json!({"model_id": "ft", "text": empty}))
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(message(&body).contains("empty text"), "{body}");
    }
    let (status, body) = server
        .post_json("/predict", &json!({"model_id": "ft", "texts": []}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .post_json("/predict", &json!({"model_id": "ft", "text": "two\nlines"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("newline"), "{body}");
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "ft", "text": "a", "features": ["b"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Text to a model that takes numbers.
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "numeric", "text": "the team won"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_hostile_file_is_an_error_version_with_a_clear_message() {
    let repo = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(root_path(&format!("{FT}/softmax.bin"))).unwrap();
    for (name, content) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("huge_dictionary", {
            let mut b = bytes.clone();
            b[64..68].copy_from_slice(&i32::MAX.to_le_bytes());
            b
        }),
    ] {
        let dir = repo.path().join(name).join("1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.bin"), content).unwrap();
    }
    let server = TestServer::start(repo.path()).await;
    for (name, words) in [
        ("truncated", "truncated fastText model"),
        ("huge_dictionary", "dictionary"),
    ] {
        let (status, body) = server.get(&format!("/v1/models/{name}")).await;
        assert_eq!(status, 200, "{body}");
        let v = &body["model_version_status"][0];
        assert_eq!(v["state"], "END", "{name}: {body}");
        let msg = v["status"]["error_message"].as_str().unwrap();
        assert!(msg.contains(words), "{name}: {msg}");
        assert!(
            !msg.contains(repo.path().to_str().unwrap()),
            "{name}: {msg}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_chooses_its_own_k_and_threshold() {
    let expected = expected();
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "lid", "lid.176.ftz", "");
    install(
        repo.path(),
        "softmax",
        "softmax.bin",
        "[cache]\nenabled = true\n",
    );
    install_model(
        repo.path(),
        "numeric",
        1,
        &root_path("crates/ferroserve-sklearn/tests/fixtures/sklearn/1.9.1/decision_tree_classifier.z3.joblib"),
    );
    let server = TestServer::start(repo.path()).await;
    let case = |name: &str, k: i64, threshold: f64| -> (String, Vec<String>, Vec<f64>) {
        let c = expected[name]["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["k"] == k && c["threshold"] == threshold && c["text"] != "")
            .unwrap();
        (
            c["text"].as_str().unwrap().to_string(),
            c["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_string())
                .collect(),
            c["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap())
                .collect(),
        )
    };

    // TF Serving REST's extra fields: k = 5 over a 0.2 threshold leaves one label,
    // and the row is padded to 5 columns.
    let (text, want_l, want_p) = case("lid176", 5, 0.2);
    let (status, body) = server
        .post_json(
            "/v1/models/lid:predict",
            &json!({"instances": [text], "k": 5, "threshold": 0.2}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let row = &body["predictions"][0];
    assert_eq!(row["labels"].as_array().unwrap().len(), 5, "{body}");
    check(
        "tfs k=5",
        &json!(row["labels"].as_array().unwrap()[..1]),
        &json!(row["probabilities"].as_array().unwrap()[..1]),
        &want_l,
        &want_p,
    );
    assert_eq!(row["labels"][1], "", "{body}");
    assert_eq!(row["probabilities"][1], 0.0, "{body}");

    // V2 parameters: every label (-1), on a model whose answers are cached; the
    // plain request after it still answers k = 1 (the cache keeps them apart).
    let (text, want_l, want_p) = case("softmax", -1, 0.0);
    let infer = |params: Value| json!({"parameters": params, "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]});
    for _ in 0..2 {
        let (status, body) = server
            .post_json("/v2/models/softmax/infer", &infer(json!({"k": -1})))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outputs"][0]["shape"], json!([1, 4]), "{body}");
        check(
            "v2 k=-1",
            &body["outputs"][0]["data"],
            &body["outputs"][1]["data"],
            &want_l,
            &want_p,
        );
        let (status, body) = server
            .post_json("/v2/models/softmax/infer", &infer(json!({})))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outputs"][0]["shape"], json!([1, 1]), "{body}");
        assert_eq!(body["outputs"][0]["data"][0], want_l[0].as_str(), "{body}");
    }

    // A k over the model's 4 labels gives every label: [n, 4], not [n, k]; k up
    // to 2^31 - 1 is taken, over it refused (gRPC takes the same range, below).
    for k in [json!(1000), json!(i32::MAX)] {
        let (status, body) = server
            .post_json("/v2/models/softmax/infer", &infer(json!({ "k": k })))
            .await;
        assert_eq!(status, 200, "{k}: {body}");
        assert_eq!(body["outputs"][0]["shape"], json!([1, 4]), "{k}: {body}");
        assert_eq!(body["outputs"][1]["shape"], json!([1, 4]), "{k}: {body}");
    }
    let (status, body) = server
        .post_json(
            "/v2/models/softmax/infer",
            &infer(json!({"k": 1_u64 << 31})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // The classification extension on `probabilities`: its columns are ranks, not
    // classes (it answered "0.355887:0", the index of the best, not a class).
    let mut classify = infer(json!({}));
    classify["outputs"] = json!([{"name": "probabilities", "parameters": {"classification": 2}}]);
    let (status, body) = server
        .post_json("/v2/models/softmax/infer", &classify)
        .await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("output \"probabilities\" holds the model's k best classes"),
        "{msg}"
    );

    // The simple API takes them too.
    let (text, want_l, want_p) = case("softmax", 3, 0.0);
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "softmax", "text": text, "k": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    check(
        "simple k=3",
        &body["prediction"],
        &body["probabilities"],
        &want_l,
        &want_p,
    );

    // Bad values, and k for a model that is not fastText.
    for params in [
        json!({"k": 0}),
        json!({"k": "three"}),
        json!({"threshold": "high"}),
    ] {
        let (status, body) = server
            .post_json("/v2/models/softmax/infer", &infer(params.clone()))
            .await;
        assert_eq!(status, 400, "{params}: {body}");
    }
    let (status, body) = server
        .post_json(
            "/v1/models/numeric:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]], "k": 2}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("fastText"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_grpc_parameters_choose_k() {
    use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
    use ferroserve_proto::inference::infer_parameter::ParameterChoice;
    use ferroserve_proto::inference::model_infer_request::InferInputTensor;
    use ferroserve_proto::inference::{self as v2, InferParameter, InferTensorContents};
    use std::collections::HashMap;

    let expected = expected();
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "lid", "lid.176.ftz", "");
    let server = TestServer::start(repo.path()).await;
    let channel = server.grpc_channel().await;
    let mut client = GrpcInferenceServiceClient::new(channel);
    let three = cases(&expected["lid176"], 3);
    let request = |k: ParameterChoice| v2::ModelInferRequest {
        model_name: "lid".into(),
        parameters: HashMap::from([(
            "k".to_string(),
            InferParameter {
                parameter_choice: Some(k),
            },
        )]),
        inputs: vec![InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![three.len() as i64],
            parameters: HashMap::new(),
            contents: Some(InferTensorContents {
                bytes_contents: three.iter().map(|c| c.0.as_bytes().to_vec()).collect(),
                ..Default::default()
            }),
        }],
        ..Default::default()
    };
    let r = client
        .model_infer(request(ParameterChoice::Int64Param(3)))
        .await
        .unwrap()
        .into_inner();
    let labels = &r.outputs.iter().find(|o| o.name == "labels").unwrap();
    assert_eq!(labels.shape, vec![three.len() as i64, 3]);
    let contents = labels.contents.as_ref().unwrap();
    let probs = r
        .outputs
        .iter()
        .find(|o| o.name == "probabilities")
        .unwrap()
        .contents
        .as_ref()
        .unwrap();
    for (i, (text, want_l, want_p)) in three.iter().enumerate() {
        let got: Vec<Value> = contents.bytes_contents[i * 3..i * 3 + 3]
            .iter()
            .map(|b| json!(String::from_utf8(b.clone()).unwrap()))
            .collect();
        let p: Vec<Value> = probs.fp32_contents[i * 3..i * 3 + 3]
            .iter()
            .map(|x| json!(x))
            .collect();
        check(
            &format!("grpc {text:?}"),
            &json!(got),
            &json!(p),
            want_l,
            want_p,
        );
    }
    let err = client
        .model_infer(request(ParameterChoice::StringParam("3".into())))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // The range V2 REST takes: up to 2^31 - 1 (every label), not past it.
    let r = client
        .model_infer(request(ParameterChoice::Int64Param(i64::from(i32::MAX))))
        .await
        .unwrap()
        .into_inner();
    let labels = r.outputs.iter().find(|o| o.name == "labels").unwrap();
    assert_eq!(labels.shape, vec![three.len() as i64, 176]);
    let err = client
        .model_infer(request(ParameterChoice::Int64Param(1 << 31)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // A whole double is refused as the double it is (it read "not 2").
    let err = client
        .model_infer(request(ParameterChoice::DoubleParam(2.0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().ends_with("not the double 2.0"), "{err:?}");
    server.stop().await;
}
