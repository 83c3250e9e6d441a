//! Every fixture over TF Serving REST and gRPC and KServe V2 against the outputs
//! TensorFlow gave; signature metadata; inputs of any rank; wrong dtypes and shapes.

use super::*;

/// TF Serving REST, columnar and row format, with `signature_name`.
pub(crate) async fn check_rest(server: &TestServer, model: &str, signature: &str, case: &Value) {
    let inputs = object(&case["inputs"], "inputs");
    let outputs = object(&case["outputs"], "outputs");
    let columns: serde_json::Map<String, Value> = inputs
        .iter()
        .map(|(k, t)| (k.clone(), nest(data_of(t), &shape_of(t))))
        .collect();
    let path = format!("/v1/models/{model}:predict");
    let (status, body) = server
        .post_json(
            &path,
            &json!({"signature_name": signature, "inputs": columns}),
        )
        .await;
    assert_eq!(status, 200, "{model}/{signature} columnar: {body}");
    for (name, want) in outputs {
        let got = if outputs.len() == 1 {
            &body["outputs"]
        } else {
            &body["outputs"][name]
        };
        assert_nested(got, want, &format!("{model}/{signature} columnar {name}"));
    }

    let batch = shape_of(inputs.values().next().unwrap())[0];
    let instances: Vec<Value> = (0..batch)
        .map(|row| {
            Value::Object(
                inputs
                    .iter()
                    .map(|(k, t)| {
                        let nested = nest(data_of(t), &shape_of(t));
                        (k.clone(), nested[row].clone())
                    })
                    .collect(),
            )
        })
        .collect();
    let (status, body) = server
        .post_json(
            &path,
            &json!({"signature_name": signature, "instances": instances}),
        )
        .await;
    assert_eq!(status, 200, "{model}/{signature} rows: {body}");
    let predictions = body["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), batch, "{body}");
    for (name, want) in outputs {
        let column: Vec<Value> = predictions
            .iter()
            .map(|row| {
                if outputs.len() == 1 {
                    row.clone()
                } else {
                    row[name].clone()
                }
            })
            .collect();
        assert_nested(
            &Value::Array(column),
            want,
            &format!("{model}/{signature} rows {name}"),
        );
    }
}

pub(crate) fn proto_shape(shape: &[usize]) -> Option<TensorShapeProto> {
    Some(TensorShapeProto {
        dim: shape
            .iter()
            .map(|&size| tensor_shape_proto::Dim {
                size: size as i64,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    })
}

/// A fixture tensor as `tf.make_tensor_proto` would make it.
fn to_proto(t: &Value) -> TensorProto {
    let data = data_of(t);
    let mut p = TensorProto {
        tensor_shape: proto_shape(&shape_of(t)),
        ..Default::default()
    };
    match t["dtype"].as_str().unwrap() {
        "float32" => {
            p.dtype = Dt::DtFloat as i32;
            p.float_val = data.iter().map(|v| v.as_f64().unwrap() as f32).collect();
        }
        "float64" => {
            p.dtype = Dt::DtDouble as i32;
            p.double_val = data.iter().map(|v| v.as_f64().unwrap()).collect();
        }
        "int64" => {
            p.dtype = Dt::DtInt64 as i32;
            p.int64_val = data.iter().map(|v| v.as_i64().unwrap()).collect();
        }
        "int32" => {
            p.dtype = Dt::DtInt32 as i32;
            p.int_val = data.iter().map(|v| v.as_i64().unwrap() as i32).collect();
        }
        "uint8" => {
            p.dtype = Dt::DtUint8 as i32;
            p.int_val = data.iter().map(|v| v.as_i64().unwrap() as i32).collect();
        }
        "bool" => {
            p.dtype = Dt::DtBool as i32;
            p.bool_val = data.iter().map(|v| v.as_bool().unwrap()).collect();
        }
        "string" => {
            p.dtype = Dt::DtString as i32;
            p.string_val = data
                .iter()
                .map(|v| v.as_str().unwrap().as_bytes().to_vec())
                .collect();
        }
        other => panic!("fixture dtype {other}"),
    }
    p
}

pub(crate) fn from_proto(p: &TensorProto) -> Vec<Value> {
    let dt = Dt::try_from(p.dtype).unwrap();
    match dt {
        Dt::DtFloat => p.float_val.iter().map(|&x| json!(x as f64)).collect(),
        Dt::DtDouble => p.double_val.iter().map(|&x| json!(x)).collect(),
        Dt::DtInt64 => p.int64_val.iter().map(|&x| json!(x)).collect(),
        Dt::DtInt32 | Dt::DtUint8 => p.int_val.iter().map(|&x| json!(x)).collect(),
        Dt::DtBool => p.bool_val.iter().map(|&x| json!(x)).collect(),
        Dt::DtString => p
            .string_val
            .iter()
            .map(|s| json!(String::from_utf8(s.clone()).unwrap()))
            .collect(),
        other => panic!("output dtype {other:?}"),
    }
}

/// TF Serving gRPC Predict with `ModelSpec.signature_name`.
async fn check_grpc(server: &TestServer, model: &str, signature: &str, case: &Value) {
    let mut client = PredictionServiceClient::new(server.grpc_channel().await);
    let request = tfs::PredictRequest {
        model_spec: Some(ModelSpec {
            name: model.into(),
            signature_name: signature.into(),
            ..Default::default()
        }),
        inputs: object(&case["inputs"], "inputs")
            .iter()
            .map(|(k, t)| (k.clone(), to_proto(t)))
            .collect::<HashMap<_, _>>(),
        output_filter: vec![],
    };
    let response = client.predict(request).await.unwrap().into_inner();
    assert_eq!(
        response.model_spec.as_ref().unwrap().signature_name,
        signature
    );
    for (name, want) in object(&case["outputs"], "outputs") {
        let got = &response.outputs[name];
        let dims: Vec<usize> = got
            .tensor_shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| d.size as usize)
            .collect();
        assert_eq!(
            dims,
            shape_of(want),
            "{model}/{signature} gRPC {name} shape"
        );
        assert_values(
            &from_proto(got),
            want,
            &format!("{model}/{signature} gRPC {name}"),
        );
    }
}

fn v2_datatype(dtype: &str) -> &'static str {
    match dtype {
        "float32" => "FP32",
        "float64" => "FP64",
        "int64" => "INT64",
        "int32" => "INT32",
        "uint8" => "UINT8",
        "bool" => "BOOL",
        "string" => "BYTES",
        other => panic!("fixture dtype {other}"),
    }
}

/// KServe V2 REST (the default signature).
async fn check_v2(server: &TestServer, model: &str, case: &Value) {
    let inputs: Vec<Value> = object(&case["inputs"], "inputs")
        .iter()
        .map(|(k, t)| {
            json!({
                "name": k,
                "datatype": v2_datatype(t["dtype"].as_str().unwrap()),
                "shape": t["shape"],
                "data": t["data"],
            })
        })
        .collect();
    let (status, body) = server
        .post_json(
            &format!("/v2/models/{model}/infer"),
            &json!({ "inputs": inputs }),
        )
        .await;
    assert_eq!(status, 200, "{model} V2: {body}");
    let outputs = body["outputs"].as_array().unwrap();
    for (name, want) in object(&case["outputs"], "outputs") {
        let got = outputs
            .iter()
            .find(|o| o["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{model} V2: no output {name}: {body}"));
        assert_eq!(
            got["datatype"],
            v2_datatype(want["dtype"].as_str().unwrap()),
            "{got}"
        );
        assert_eq!(got["shape"], want["shape"], "{got}");
        assert_nested(&got["data"], want, &format!("{model} V2 {name}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_over_tf_serving_rest_grpc_and_v2_equals_tensorflow() {
    let repo = repo(&FIXTURES);
    let server = TestServer::start_with(settings(repo.path())).await;
    for model in FIXTURES {
        let exp = expected(model);
        for (signature, case) in object(&exp, model) {
            check_rest(&server, model, signature, case).await;
            check_grpc(&server, model, signature, case).await;
            if signature == "serving_default" {
                check_v2(&server, model, case).await;
                // No signature name: the default one.
                let columns: serde_json::Map<String, Value> = object(&case["inputs"], "inputs")
                    .iter()
                    .map(|(k, t)| (k.clone(), nest(data_of(t), &shape_of(t))))
                    .collect();
                let (status, body) = server
                    .post_json(
                        &format!("/v1/models/{model}:predict"),
                        &json!({ "inputs": columns }),
                    )
                    .await;
                assert_eq!(status, 200, "{model} without signature_name: {body}");
            }
        }
    }
    server.stop().await;
}

/// `GetModelMetadata`'s SignatureDefMap of `model`.
async fn grpc_signature_defs(server: &TestServer, model: &str) -> tfs::SignatureDefMap {
    let mut client = PredictionServiceClient::new(server.grpc_channel().await);
    let meta = client
        .get_model_metadata(tfs::GetModelMetadataRequest {
            model_spec: Some(ModelSpec {
                name: model.into(),
                ..Default::default()
            }),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .unwrap()
        .into_inner();
    tfs::SignatureDefMap::decode(&*meta.metadata["signature_def"].value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_gives_the_saved_models_own_signature_defs() {
    let repo = repo(&["multi"]);
    let server = TestServer::start_with(settings(repo.path())).await;

    let (status, body) = server.get("/v1/models/multi/metadata").await;
    assert_eq!(status, 200, "{body}");
    let defs = &body["metadata"]["signature_def"]["signature_def"];
    let names: Vec<&String> = object(defs, "signature_def").keys().collect();
    // `half` (a float16 output) is left out; the others serve.
    assert_eq!(names, ["combine", "serving_default"], "{defs}");
    // As `saved_model_cli show --all` prints them.
    let x = &defs["serving_default"]["inputs"]["x"];
    assert_eq!(x["name"], "serving_default_x:0", "{x}");
    assert_eq!(x["dtype"], "DT_FLOAT", "{x}");
    assert_eq!(x["tensor_shape"]["dim"][1]["size"], "3", "{x}");
    assert_eq!(defs["combine"]["inputs"]["b"]["dtype"], "DT_UINT8");
    assert_eq!(
        defs["combine"]["outputs"]["sum"]["name"],
        "PartitionedCall:1"
    );
    assert_eq!(defs["combine"]["method_name"], "tensorflow/serving/predict");

    let map = grpc_signature_defs(&server, "multi").await;
    let mut names: Vec<&String> = map.signature_def.keys().collect();
    names.sort();
    assert_eq!(names, ["combine", "serving_default"]);
    assert_eq!(
        map.signature_def["combine"].inputs["a"].dtype,
        Dt::DtDouble as i32
    );

    // V2 metadata lists the default signature's tensors.
    let (status, v2) = server.get("/v2/models/multi").await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["platform"], "tensorflow_savedmodel", "{v2}");
    let inputs: Vec<&str> = v2["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, ["count", "flag", "x"], "{v2}");

    // A signature the model lacks is 400 / INVALID_ARGUMENT, naming the ones it has.
    let (status, body) = server
        .post_json(
            "/v1/models/multi:predict",
            &json!({"signature_name": "nope", "inputs": {"a": [[1.0, 2.0]], "b": [[1, 2]]}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("\"nope\"") && message.contains("\"combine\""),
        "{message}"
    );
    let mut client = PredictionServiceClient::new(server.grpc_channel().await);
    let err = client
        .predict(tfs::PredictRequest {
            model_spec: Some(ModelSpec {
                name: "multi".into(),
                signature_name: "nope".into(),
                ..Default::default()
            }),
            inputs: HashMap::new(),
            output_filter: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    server.stop().await;
}

/// A signature input without a shape (`tf.TensorSpec(None)`, a TF1 placeholder
/// given none) takes every shape, as TF Serving feeds it; was taken for rank 1, and
/// a matrix was refused before TensorFlow saw it. Its metadata says unknown_rank.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_of_any_rank_takes_every_shape_over_every_api() {
    let repo = repo(&["any_rank"]);
    let server = TestServer::start_with(settings(repo.path())).await;
    let exp = expected("any_rank");
    let cases = exp["cases"].as_array().unwrap();
    let ranks: Vec<usize> = cases
        .iter()
        .map(|c| shape_of(&c["inputs"]["x"]).len())
        .collect();
    assert_eq!(ranks, [0, 1, 2, 3]);
    for case in cases {
        check_grpc(&server, "any_rank", "serving_default", case).await;
        check_v2(&server, "any_rank", case).await;
        if shape_of(&case["inputs"]["x"]).is_empty() {
            // A scalar: columnar only (rows need a first dimension).
            let x = &data_of(&case["inputs"]["x"])[0];
            let (status, body) = server
                .post_json("/v1/models/any_rank:predict", &json!({"inputs": {"x": x}}))
                .await;
            assert_eq!(status, 200, "{body}");
            assert_nested(&body["outputs"], &case["outputs"]["y"], "scalar");
        } else {
            check_rest(&server, "any_rank", "serving_default", case).await;
        }
    }

    // More than TensorFlow's 254 dimensions aborted the whole server (a CHECK in
    // TF_AllocateTensor); now a 400, and the server goes on. 254 runs.
    for (rank, want) in [(255, 400), (254, 200)] {
        let request = json!({"inputs": [{"name": "x", "shape": vec![1; rank], "datatype": "FP32", "data": [1.0]}]});
        let (status, body) = server
            .post_json("/v2/models/any_rank/infer", &request)
            .await;
        assert_eq!(status, want, "rank {rank}: {body}");
        if want == 400 {
            assert!(
                body["error"].as_str().unwrap().contains("at most 254"),
                "{body}"
            );
        }
    }

    let (status, body) = server.get("/v1/models/any_rank/metadata").await;
    assert_eq!(status, 200, "{body}");
    let defs = &body["metadata"]["signature_def"]["signature_def"];
    assert_eq!(
        defs["serving_default"]["inputs"]["x"]["tensor_shape"],
        json!({"dim": [], "unknown_rank": true}),
        "{defs}"
    );
    let map = grpc_signature_defs(&server, "any_rank").await;
    let shape = map.signature_def["serving_default"].inputs["x"]
        .tensor_shape
        .clone()
        .unwrap();
    assert!(shape.unknown_rank && shape.dim.is_empty(), "{shape:?}");
    // V2 has no unknown rank: one dimension of any size, as Triton writes it.
    let (status, v2) = server.get("/v2/models/any_rank").await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["inputs"][0]["shape"], json!([-1]), "{v2}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_dtype_or_shape_is_400_before_tensorflow_runs() {
    let repo = repo(&["mlp", "multi"]);
    let server = TestServer::start_with(settings(repo.path())).await;
    let cases = [
        ("mlp", json!({"instances": [[1.0, 2.0, 3.0]]}), "shape"),
        ("mlp", json!({"instances": [["a", "b", "c", "d"]]}), ""),
        (
            "multi",
            json!({"signature_name": "combine", "inputs": {"a": [[1.0, 2.0, 3.0]], "b": [[1, 2]]}}),
            "",
        ),
        (
            "multi",
            json!({"inputs": {"x": [[1.0, 2.0, 3.0]], "count": [1]}}),
            "missing",
        ),
    ];
    for (model, body, word) in cases {
        let (status, answer) = server
            .post_json(&format!("/v1/models/{model}:predict"), &body)
            .await;
        assert_eq!(status, 400, "{model} {body}: {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(word), "{message}");
    }
    // The server still answers afterwards.
    let (status, _) = server
        .post_json(
            "/v1/models/mlp:predict",
            &json!({"instances": [[1.0, 2.0, 3.0, 4.0]]}),
        )
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}
