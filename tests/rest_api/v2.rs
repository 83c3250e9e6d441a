//! KServe V2 REST: every dtype through both APIs, health, metadata and output
//! selection, the binary tensor extension (FP16 too), and the fast path answering
//! as the router does.

use super::*;

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
