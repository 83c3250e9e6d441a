//! Black-box tests of the TF Serving and KServe V2 REST APIs over a real socket,
//! compared with what scikit-learn and onnxruntime-Python gave for the same rows
//! (the `expected.json` files written by `python/make_onnx_models.py`).

mod common;

use common::{
    assert_close, assert_error, install_model, raw_post, root_path, timeless, TestServer,
};
use serde_json::{json, Value};

fn expected(rel: &str) -> Value {
    let text = std::fs::read_to_string(root_path(rel)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A repository with the two example models and the test fixtures.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in ["iris_lr", "iris_dt"] {
        install_model(
            dir.path(),
            m,
            1,
            &root_path(&format!("examples/models/{m}/1/model.onnx")),
        );
    }
    for m in ["iris_str", "diabetes_f64", "multi_io"] {
        install_model(
            dir.path(),
            m,
            1,
            &root_path(&format!("tests/fixtures/onnx/{m}/model.onnx")),
        );
    }
    dir
}

fn f64s(v: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            other => out.push(other.as_f64().unwrap()),
        }
    }
    walk(v, &mut out);
    out
}

/// POSTs a V2 infer body in the binary tensor data extension: `header`'s JSON,
/// then `blobs` in order.
async fn post_v2_binary(
    server: &TestServer,
    path: &str,
    header: &Value,
    blobs: &[&[u8]],
) -> reqwest::Response {
    let header = header.to_string();
    let mut body = header.clone().into_bytes();
    for blob in blobs {
        body.extend_from_slice(blob);
    }
    server
        .client
        .post(server.url(path))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A binary V2 answer: its JSON part, and the bytes after it.
async fn binary_answer(r: reqwest::Response) -> (Value, Vec<u8>) {
    let json_len: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let doc: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    (doc, bytes[json_len..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_status_and_metadata() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let (status, body) = server.get("/v1/models/iris_lr").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    );
    let (status, body) = server.get("/v1/models/iris_lr/versions/1").await;
    assert_eq!(status, 200);
    assert_eq!(body["model_version_status"][0]["version"], "1");

    let (status, meta) = server.get("/v1/models/iris_lr/metadata").await;
    assert_eq!(status, 200);
    assert_eq!(meta["model_spec"]["name"], "iris_lr");
    assert_eq!(meta["model_spec"]["version"], "1");
    let sig = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["inputs"]["input"]["dtype"], "DT_FLOAT");
    assert_eq!(
        sig["inputs"]["input"]["tensor_shape"]["dim"][0]["size"],
        "-1"
    );
    assert_eq!(
        sig["inputs"]["input"]["tensor_shape"]["dim"][1]["size"],
        "4"
    );
    assert_eq!(sig["outputs"]["label"]["dtype"], "DT_INT64");
    assert_eq!(sig["outputs"]["probabilities"]["dtype"], "DT_FLOAT");
    let (_, meta) = server.get("/v1/models/iris_str/versions/1/metadata").await;
    let sig = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["outputs"]["label"]["dtype"], "DT_STRING");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_predict_matches_sklearn_in_both_formats() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    for model in ["iris_lr", "iris_dt"] {
        let exp = expected(&format!("examples/models/{model}/1/expected.json"));
        let rows = exp["rows"].clone();
        // Row format: one object per instance, as there are several outputs.
        let (status, body) = server
            .post_json(
                &format!("/v1/models/{model}:predict"),
                &json!({"instances": rows}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let preds = body["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), rows.as_array().unwrap().len());
        for (i, p) in preds.iter().enumerate() {
            assert_eq!(p["label"], exp["sklearn_predict"][i], "{model} row {i}");
            for (j, prob) in f64s(&p["probabilities"]).into_iter().enumerate() {
                let ort = exp["onnxruntime"]["probabilities"][i][j].as_f64().unwrap();
                assert_eq!(
                    prob as f32, ort as f32,
                    "{model} row {i} class {j} vs onnxruntime"
                );
                let skl = exp["sklearn_predict_proba"][i][j].as_f64().unwrap();
                assert!(
                    (prob - skl).abs() < 1e-5,
                    "{model} row {i} class {j} vs sklearn"
                );
            }
        }
        // Columnar format, with the signature named and a specific version.
        let (status, body) = server
            .post_json(
                &format!("/v1/models/{model}/versions/1:predict"),
                &json!({"signature_name": "serving_default", "inputs": {"input": rows}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outputs"]["label"], exp["sklearn_predict"]);
        assert_eq!(
            body["outputs"]["probabilities"].as_array().unwrap().len(),
            preds.len()
        );
    }
    server.stop().await;
}

/// NaN and the infinities over TF Serving REST: bare, as Python's `json.dumps` and
/// TF Serving's parser write and read them, or as the strings the answers carry
/// (both were 400: malformed JSON, "expected a string, found a number").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_rest_takes_nan_and_infinity() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let path = "/v1/models/iris_lr:predict";
    let (status, bare) = server
        .post_raw(
            path,
            br#"{"instances": [[NaN, Infinity, 1.0, -Infinity]]}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{bare}");
    for body in [
        json!({"instances": [["NaN", "Infinity", 1.0, "-Infinity"]]}),
        json!({"instances": [[f64::NAN.to_string(), "Infinity", 1, "-Infinity"]]}),
    ] {
        let (status, answer) = server.post_json(path, &body).await;
        assert_eq!(status, 200, "{body}: {answer}");
        assert_eq!(answer, bare, "{body}");
    }
    // Nothing but names of floats: still floats for a float input.
    let (status, answer) = server
        .post_json(
            path,
            &json!({"inputs": [["NaN", "Infinity", "inf", "-Infinity"]]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    // A bare word inside a string stays text; a body that is broken stays refused.
    let (status, answer) = server
        .post_raw(
            path,
            br#"{"signature_name": "NaN", "instances": [[NaN, 1, 2, 3]]}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("\"NaN\""),
        "{answer}"
    );
    let (status, answer) = server
        .post_raw(path, br#"{"instances": [[NaNa, 1, 2, 3]]}"#.to_vec())
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("malformed JSON"),
        "{answer}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_labels_and_float64_regression() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let exp = expected("tests/fixtures/onnx/iris_str/expected.json");
    let (status, body) = server
        .post_json(
            "/v1/models/iris_str:predict",
            &json!({"instances": exp["rows"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let labels: Vec<Value> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].clone())
        .collect();
    assert_eq!(Value::Array(labels), exp["sklearn_predict"]);

    let exp = expected("tests/fixtures/onnx/diabetes_f64/expected.json");
    let (status, body) = server
        .post_json(
            "/v1/models/diabetes_f64:predict",
            &json!({"inputs": exp["rows"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = f64s(&body["outputs"]);
    for (i, (g, e)) in got.iter().zip(f64s(&exp["sklearn_predict"])).enumerate() {
        assert_close(*g, e, 1e-12, &format!("diabetes row {i}"));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dtype_round_trips_through_both_apis() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let exp = expected("tests/fixtures/onnx/multi_io/expected.json");
    let inputs = &exp["inputs"];
    let ort = &exp["onnxruntime"];
    // TF Serving row format with named inputs.
    let n = inputs["f64"].as_array().unwrap().len();
    let instances: Vec<Value> = (0..n)
        .map(|i| {
            let mut o = serde_json::Map::new();
            for (k, v) in inputs.as_object().unwrap() {
                o.insert(k.clone(), v[i].clone());
            }
            Value::Object(o)
        })
        .collect();
    let (status, body) = server
        .post_json(
            "/v1/models/multi_io:predict",
            &json!({"instances": instances}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for out in ["i32_abs", "i64_neg", "flag_not", "text_out", "f64_neg"] {
        let got: Vec<Value> = body["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[out].clone())
            .collect();
        assert_eq!(Value::Array(got), ort[out], "{out}");
    }
    // KServe V2 JSON with declared datatypes.
    let v2_inputs = json!([
        {"name": "f32", "shape": [2, 2], "datatype": "FP32", "data": inputs["f32"]},
        {"name": "f64", "shape": [2], "datatype": "FP64", "data": inputs["f64"]},
        {"name": "i32", "shape": [2], "datatype": "INT32", "data": inputs["i32"]},
        {"name": "i64", "shape": [2], "datatype": "INT64", "data": inputs["i64"]},
        {"name": "flag", "shape": [2], "datatype": "BOOL", "data": inputs["flag"]},
        {"name": "text", "shape": [2], "datatype": "BYTES", "data": inputs["text"]},
    ]);
    let (status, body) = server
        .post_json(
            "/v2/models/multi_io/infer",
            &json!({"id": "req-7", "inputs": v2_inputs}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "req-7");
    assert_eq!(body["model_version"], "1");
    let outputs = body["outputs"].as_array().unwrap();
    let by_name = |n: &str| outputs.iter().find(|o| o["name"] == n).unwrap().clone();
    assert_eq!(by_name("i64_neg")["datatype"], "INT64");
    assert_eq!(by_name("i64_neg")["data"], ort["i64_neg"]);
    assert_eq!(by_name("text_out")["datatype"], "BYTES");
    assert_eq!(by_name("text_out")["data"], ort["text_out"]);
    assert_eq!(by_name("flag_not")["data"], ort["flag_not"]);
    assert_eq!(by_name("i32_abs")["datatype"], "INT32");
    assert_eq!(by_name("f32_sum")["shape"], json!([2, 1]));
    assert_eq!(f64s(&by_name("f32_sum")["data"]), f64s(&ort["f32_sum"]));

    // A number is not a boolean: TF Serving takes only true/false for DT_BOOL.
    let mut numbers = inputs.clone();
    numbers["flag"] = json!([1, 0]);
    let (status, body) = server
        .post_json("/v1/models/multi_io:predict", &json!({"inputs": numbers}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("input \"flag\" takes BOOL values (true or false), not INT64"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_health_metadata_and_output_selection() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let (status, meta) = server.get("/v2").await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "ferroserve");
    assert!(meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("binary_tensor_data")));
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/iris_lr/ready",
        "/v2/models/iris_lr/versions/1/ready",
        "/healthz",
    ] {
        assert_eq!(server.get(path).await.0, 200, "{path}");
    }
    assert_eq!(server.get("/v2/models/nope/ready").await.0, 404);
    let (status, meta) = server.get("/v2/models/iris_lr/versions/1").await;
    assert_eq!(status, 200);
    assert_eq!(meta["platform"], "onnxruntime_onnx");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 4]}])
    );

    let exp = expected("examples/models/iris_lr/1/expected.json");
    let rows: Vec<Value> = exp["rows"].as_array().unwrap()[..3].to_vec();
    let (status, body) = server
        .post_json(
            "/v2/models/iris_lr/infer",
            &json!({"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": rows}],
                    "outputs": [{"name": "label"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "only the selected output");
    assert_eq!(
        outputs[0]["data"],
        json!(exp["sklearn_predict"].as_array().unwrap()[..3])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_binary_tensor_extension() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let rows: [f32; 8] = [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3];
    let header = json!({
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}],
        "outputs": [{"name": "label", "parameters": {"binary_data": true}}, {"name": "probabilities", "parameters": {"binary_data": false}}]
    });
    let floats: Vec<u8> = rows.iter().flat_map(|x| x.to_le_bytes()).collect();
    let r = post_v2_binary(&server, "/v2/models/iris_lr/infer", &header, &[&floats]).await;
    assert_eq!(r.status(), 200);
    let (doc, raw) = binary_answer(r).await;
    let label = &doc["outputs"][0];
    assert_eq!(label["parameters"]["binary_data_size"], 16);
    assert!(label.get("data").is_none());
    let labels: Vec<i64> = raw
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(labels, vec![0, 2]);
    assert_eq!(doc["outputs"][1]["data"].as_array().unwrap().len(), 6);

    // binary_data_output with every output opting out: plain JSON (it was framed
    // as binary with nothing after the header). A flag that is no boolean is
    // refused (it was taken for false).
    let json_rows = json!({
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}],
        "parameters": {"binary_data_output": true},
        "outputs": [{"name": "label", "parameters": {"binary_data": false}}],
    });
    let r = server
        .client
        .post(server.url("/v2/models/iris_lr/infer"))
        .json(&json_rows)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("inference-header-content-length").is_none());
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["outputs"][0]["data"], json!([0]), "{doc}");
    for bad in [
        json!({"parameters": {"binary_data_output": "yes"}}),
        json!({"outputs": [{"name": "label", "parameters": {"binary_data": 1}}]}),
    ] {
        let mut body = json!({
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}],
        });
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = server.post_json("/v2/models/iris_lr/infer", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("must be true or false"),
            "{answer}"
        );
    }
    server.stop().await;
}

/// FP16 inputs and outputs of an ONNX model, in the binary extension (the V2 JSON
/// form has no FP16): the bits onnxruntime-Python gave. An FP16 input was refused
/// ("not supported by the ONNX backend") and an FP16 output was a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_binary_fp16_in_and_out_of_an_onnx_model() {
    let dir = tempfile::tempdir().unwrap();
    install_model(
        dir.path(),
        "half_io",
        1,
        &root_path("tests/fixtures/onnx/half_io/model.onnx"),
    );
    let server = TestServer::start(dir.path()).await;
    let exp = expected("tests/fixtures/onnx/half_io/expected.json");
    let u16s = |v: &Value| -> Vec<u16> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u16)
            .collect()
    };
    let h: Vec<u8> = u16s(&exp["input_bits"]["h"])
        .iter()
        .flat_map(|b| b.to_le_bytes())
        .collect();
    let x: Vec<u8> = f64s(&exp["inputs"]["x"])
        .iter()
        .flat_map(|&v| (v as f32).to_le_bytes())
        .collect();
    let header = json!({
        "inputs": [
            {"name": "h", "shape": [2, 3], "datatype": "FP16", "parameters": {"binary_data_size": h.len()}},
            {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": x.len()}},
        ],
        "outputs": [
            {"name": "h_twice", "parameters": {"binary_data": true}},
            {"name": "x_half", "parameters": {"binary_data": true}},
            {"name": "h_float", "parameters": {"binary_data": true}},
        ]
    });
    let r = post_v2_binary(&server, "/v2/models/half_io/infer", &header, &[&h, &x]).await;
    assert_eq!(r.status(), 200);
    let (doc, raw) = binary_answer(r).await;
    let mut raw = raw.as_slice();
    for (i, name) in ["h_twice", "x_half", "h_float"].into_iter().enumerate() {
        let out = &doc["outputs"][i];
        assert_eq!(out["name"], name, "{doc}");
        let size = out["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
        let (mine, rest) = raw.split_at(size);
        raw = rest;
        if name == "h_float" {
            assert_eq!(out["datatype"], "FP32", "{doc}");
            let got: Vec<f64> = mine
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                .collect();
            assert_eq!(got, f64s(&exp["onnxruntime"]["h_float"]), "{name}");
        } else {
            assert_eq!(out["datatype"], "FP16", "{doc}");
            let got: Vec<u16> = mine
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(got, u16s(&exp["onnxruntime_half_bits"][name]), "{name}");
        }
    }
    // An FP16 output asked for in JSON is its values as numbers (they were its
    // bits, 15360 for 1.0); one past FP16's range is "Infinity", as other floats.
    let header = json!({
        "inputs": [
            {"name": "h", "shape": [2, 3], "datatype": "FP16", "parameters": {"binary_data_size": h.len()}},
            {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": x.len()}},
        ],
        "outputs": [{"name": "x_half"}]
    });
    let r = post_v2_binary(&server, "/v2/models/half_io/infer", &header, &[&h, &x]).await;
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    let data = &doc["outputs"][0]["data"];
    let want: Vec<Value> = exp["onnxruntime"]["x_half"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            if v.is_null() {
                json!("Infinity")
            } else {
                v.clone()
            }
        })
        .collect();
    assert_eq!(data, &json!(want), "{doc}");

    // FP16 inputs as JSON numbers, V2 and TF Serving REST (as TF Serving takes
    // them for DT_HALF): the same halves, and one past FP16's range refused.
    let h_json = json!(exp["inputs"]["h"]);
    let x_json = json!(exp["inputs"]["x"]);
    let (status, answer) = server
        .post_json(
            "/v2/models/half_io/infer",
            &json!({"inputs": [
                {"name": "h", "shape": [2, 3], "datatype": "FP16", "data": h_json},
                {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": x_json},
            ], "outputs": [{"name": "h_float"}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        f64s(&answer["outputs"][0]["data"]),
        f64s(&exp["onnxruntime"]["h_float"])
    );
    let (status, answer) = server
        .post_json(
            "/v1/models/half_io:predict",
            &json!({"inputs": {"h": h_json, "x": x_json}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    // FP32 in the fewest digits that read back as the same float (as TF Serving
    // writes them): equal as floats.
    let f32s = |v: &Value| f64s(v).into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    assert_eq!(
        f32s(&answer["outputs"]["h_float"]),
        f32s(&exp["onnxruntime"]["h_float"])
    );
    let (status, answer) = server
        .post_json(
            "/v2/models/half_io/infer",
            &json!({"inputs": [
                {"name": "h", "shape": [1, 3], "datatype": "FP16", "data": [1, 2, 70000]},
                {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
            ]}),
        )
        .await;
    assert_error(status, &answer, 400, "does not fit FP16");
    server.stop().await;
}

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

/// Predict requests of at most 1 MiB with a declared length skip the router
/// (`ferroserve::http::fast`); chunked ones go through it. Both must answer the
/// same, successes and errors alike, on every API the fast path takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_answers_as_the_router_does() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let row = "[5.1, 3.5, 1.4, 0.2]";
    let v2 = format!(
        r#"{{"inputs": [{{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": {row}}}]}}"#
    );
    let rows = vec![row; 4000].join(", ");
    let big_v2 = format!(
        r#"{{"inputs": [{{"name": "input", "shape": [4000, 4], "datatype": "FP32", "data": [{rows}]}}]}}"#
    );
    assert!(big_v2.len() > 64 * 1024 && big_v2.len() < 1024 * 1024);
    let cases = [
        (
            "/v1/models/iris_lr:predict",
            format!(r#"{{"instances": [{row}]}}"#),
            200,
        ),
        (
            "/v1/models/iris_lr/versions/1:predict",
            format!(r#"{{"inputs": [{row}]}}"#),
            200,
        ),
        (
            "/v1/models/iris_lr/versions/7:predict",
            format!(r#"{{"instances": [{row}]}}"#),
            404,
        ),
        (
            "/v1/models/nope:predict",
            format!(r#"{{"instances": [{row}]}}"#),
            404,
        ),
        ("/v1/models/iris_lr:predict", "{not json".to_string(), 400),
        (
            "/v1/models/iris_lr:predict",
            r#"{"instances": [[1, 2]]}"#.to_string(),
            400,
        ),
        ("/v2/models/iris_lr/infer", v2.clone(), 200),
        // Bodies up to 1 MiB take the fast path: 4,000 rows, about 100 KB.
        ("/v2/models/iris_lr/infer", big_v2, 200),
        ("/v2/models/iris_lr/versions/1/infer", v2.clone(), 200),
        ("/v2/models/iris_lr/versions/0/infer", v2.clone(), 400),
        ("/v2/models/nope/infer", v2.clone(), 404),
        (
            "/predict",
            format!(r#"{{"model_id": "iris_lr", "features": {row}}}"#),
            200,
        ),
        ("/predict", format!(r#"{{"features": {row}}}"#), 400),
        ("/predict/iris_lr", format!(r#"{{"features": {row}}}"#), 200),
        (
            "/predict/iris_lr/infer",
            format!(r#"{{"features": [{row}, {row}]}}"#),
            200,
        ),
        // No model: was sliced past the path's end on the fast path (a panic, the
        // connection closed without an answer).
        ("/v1/models", "{}".to_string(), 404),
        ("/v1/models/", "{}".to_string(), 404),
    ];
    for (path, body, status) in &cases {
        // The simple API's answer says when and how fast it was made.
        let fast = timeless(raw_post(server.rest_addr, path, body, false).await);
        let routed = timeless(raw_post(server.rest_addr, path, body, true).await);
        assert_eq!(fast.0, *status, "{path} {body}: {}", fast.2);
        assert_eq!(fast, routed, "{path} {body}");
        assert!(fast.1.starts_with("application/json"), "{path}: {}", fast.1);
    }
}
