//! KServe V2's GRPCInferenceService.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v2_health_metadata_and_infer_match_rest() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut client = GrpcInferenceServiceClient::new(server.grpc_channel().await);

    assert!(
        client
            .server_live(v2::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(v2::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let ready = |name: &str, version: &str| v2::ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        client
            .model_ready(ready("iris_lr", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        client
            .model_ready(ready("iris_lr", "2"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    // As REST reads /versions/02: version 2 (it was INVALID_ARGUMENT here).
    assert!(
        client
            .model_ready(ready("iris_lr", "02"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !client
            .model_ready(ready("iris_lr", "7"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !client
            .model_ready(ready("nope", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let meta = client
        .server_metadata(v2::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "ferroserve");
    assert!(meta.extensions.contains(&"model_repository".to_string()));

    let meta = client
        .model_metadata(v2::ModelMetadataRequest {
            name: "iris_lr".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.versions, vec!["1", "2"]);
    assert_eq!(meta.platform, "onnxruntime_onnx");
    assert_eq!(
        (
            meta.inputs[0].name.as_str(),
            meta.inputs[0].datatype.as_str()
        ),
        ("input", "FP32")
    );
    assert_eq!(meta.inputs[0].shape, vec![-1, 4]);

    // Typed contents: INT64 labels and FP32 probabilities, equal to REST's answer.
    let exp = expected("examples/models/iris_lr/1/expected.json");
    let rows = expected_rows(&exp);
    let mut request = infer_request(
        "iris_lr",
        vec![v2_input("input", "FP32", &[2, 4], f32_contents(&rows[..2]))],
    );
    request.model_version = "1".into();
    request.id = "req-42".into();
    let typed = client
        .model_infer(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (typed.id.as_str(), typed.model_version.as_str()),
        ("req-42", "1")
    );
    assert!(typed.raw_output_contents.is_empty());
    let label = typed.outputs.iter().find(|o| o.name == "label").unwrap();
    assert_eq!(
        (label.datatype.as_str(), label.shape.as_slice()),
        ("INT64", &[2i64][..])
    );
    assert_eq!(label.contents.as_ref().unwrap().int64_contents, vec![0, 0]);
    let (status, rest) = server
        .post_json(
            "/v2/models/iris_lr/versions/1/infer",
            &json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": rows[..2].concat()}]}),
        )
        .await;
    assert_eq!(status, 200, "{rest}");
    let rest_probs: Vec<f32> = rest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let probs = typed
        .outputs
        .iter()
        .find(|o| o.name == "probabilities")
        .unwrap();
    assert_eq!(probs.contents.as_ref().unwrap().fp32_contents, rest_probs);

    // Raw contents in, raw contents out; output selection.
    let mut raw = infer_request(
        "iris_lr",
        vec![InferInputTensor {
            contents: None,
            ..v2_input("input", "FP32", &[2, 4], Default::default())
        }],
    );
    raw.model_version = "1".into();
    raw.raw_input_contents = vec![rows[..2]
        .concat()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect()];
    raw.outputs = vec![InferRequestedOutputTensor {
        name: "probabilities".into(),
        parameters: HashMap::new(),
    }];
    let r = client.model_infer(raw).await.unwrap().into_inner();
    assert_eq!(r.outputs.len(), 1);
    assert!(r.outputs[0].contents.is_none());
    let got: Vec<f32> = r.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, rest_probs);

    // BYTES output: iris_str's labels, typed and raw (4-byte length prefixes).
    let sexp = expected("tests/fixtures/onnx/iris_str/expected.json");
    let srows = expected_rows(&sexp);
    let request = infer_request(
        "iris_str",
        vec![v2_input(
            "input",
            "FP32",
            &[3, 4],
            f32_contents(&srows[..3]),
        )],
    );
    let r = client.model_infer(request).await.unwrap().into_inner();
    let label = r.outputs.iter().find(|o| o.datatype == "BYTES").unwrap();
    let want: Vec<Vec<u8>> = sexp["onnxruntime"]["label"].as_array().unwrap()[..3]
        .iter()
        .map(|v| v.as_str().unwrap().as_bytes().to_vec())
        .collect();
    assert_eq!(label.contents.as_ref().unwrap().bytes_contents, want);

    // Every dtype multi_io takes and gives, typed and raw, as onnxruntime gave them.
    let mexp = expected("tests/fixtures/onnx/multi_io/expected.json");
    let inputs = &mexp["inputs"];
    let i64s = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let typed_inputs = vec![
        v2_input(
            "f32",
            "FP32",
            &[2, 2],
            InferTensorContents {
                fp32_contents: inputs["f32"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| {
                        r.as_array()
                            .unwrap()
                            .iter()
                            .map(|x| x.as_f64().unwrap() as f32)
                    })
                    .collect(),
                ..Default::default()
            },
        ),
        v2_input(
            "f64",
            "FP64",
            &[2],
            InferTensorContents {
                fp64_contents: inputs["f64"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect(),
                ..Default::default()
            },
        ),
        v2_input(
            "i32",
            "INT32",
            &[2],
            InferTensorContents {
                int_contents: i64s(&inputs["i32"]).iter().map(|&x| x as i32).collect(),
                ..Default::default()
            },
        ),
        v2_input(
            "i64",
            "INT64",
            &[2],
            InferTensorContents {
                int64_contents: i64s(&inputs["i64"]),
                ..Default::default()
            },
        ),
        v2_input(
            "flag",
            "BOOL",
            &[2],
            InferTensorContents {
                bool_contents: inputs["flag"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_bool().unwrap())
                    .collect(),
                ..Default::default()
            },
        ),
        v2_input(
            "text",
            "BYTES",
            &[2],
            InferTensorContents {
                bytes_contents: inputs["text"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().as_bytes().to_vec())
                    .collect(),
                ..Default::default()
            },
        ),
    ];
    let r = client
        .model_infer(infer_request("multi_io", typed_inputs.clone()))
        .await
        .unwrap()
        .into_inner();
    let out = |name: &str| {
        r.outputs
            .iter()
            .find(|o| o.name == name)
            .unwrap()
            .contents
            .clone()
            .unwrap()
    };
    let want = &mexp["onnxruntime"];
    assert_eq!(out("i64_neg").int64_contents, i64s(&want["i64_neg"]));
    assert_eq!(
        out("i32_abs").int_contents,
        i64s(&want["i32_abs"])
            .iter()
            .map(|&x| x as i32)
            .collect::<Vec<_>>()
    );
    assert_eq!(out("flag_not").bool_contents, vec![false, true]);
    assert_eq!(
        out("text_out").bytes_contents,
        vec!["setosa".as_bytes().to_vec(), "über".as_bytes().to_vec()]
    );
    assert_eq!(out("f64_neg").fp64_contents, vec![-0.1, 2.5]);
    assert_eq!(out("f32_sum").fp32_contents, vec![3.5, -0.75]);
    // The same tensors raw give the same answer, raw.
    let mut raw = infer_request("multi_io", vec![]);
    for input in typed_inputs {
        let c = input.contents.clone().unwrap();
        let bytes: Vec<u8> = match input.datatype.as_str() {
            "FP32" => c
                .fp32_contents
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            "FP64" => c
                .fp64_contents
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            "INT32" => c
                .int_contents
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            "INT64" => c
                .int64_contents
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            "BOOL" => c.bool_contents.iter().map(|&b| b as u8).collect(),
            _ => c
                .bytes_contents
                .iter()
                .flat_map(|b| [(b.len() as u32).to_le_bytes().to_vec(), b.clone()].concat())
                .collect(),
        };
        raw.raw_input_contents.push(bytes.into());
        raw.inputs.push(InferInputTensor {
            contents: None,
            ..input
        });
    }
    let r = client.model_infer(raw).await.unwrap().into_inner();
    let i = r.outputs.iter().position(|o| o.name == "text_out").unwrap();
    assert_eq!(
        r.raw_output_contents[i],
        [
            &6u32.to_le_bytes()[..],
            b"setosa",
            &5u32.to_le_bytes()[..],
            "über".as_bytes()
        ]
        .concat()
    );
    let i = r.outputs.iter().position(|o| o.name == "i64_neg").unwrap();
    assert_eq!(
        r.raw_output_contents[i],
        i64s(&want["i64_neg"])
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v2_infer_refuses_bad_requests() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let row = vec![vec![5.1f32, 3.5, 1.4, 0.2]];
    let good = || v2_input("input", "FP32", &[1, 4], f32_contents(&row));
    let with = |f: fn(&mut v2::ModelInferRequest)| {
        let mut r = infer_request("iris_lr", vec![good()]);
        f(&mut r);
        r
    };
    let cases: Vec<(&str, v2::ModelInferRequest, Code, &str)> = vec![
        (
            "unknown model",
            with(|r| r.model_name = "nope".into()),
            Code::NotFound,
            "nope",
        ),
        (
            "unknown version",
            with(|r| r.model_version = "9".into()),
            Code::NotFound,
            "version 9",
        ),
        (
            "bad version",
            with(|r| r.model_version = "v1".into()),
            Code::InvalidArgument,
            "not a model version",
        ),
        (
            "wrong dtype",
            with(|r| r.inputs[0].datatype = "BYTES".into()),
            Code::InvalidArgument,
            "input \"input\"",
        ),
        (
            "unknown datatype",
            with(|r| r.inputs[0].datatype = "FLOAT".into()),
            Code::InvalidArgument,
            "unknown datatype",
        ),
        (
            "shared memory",
            with(|r| {
                r.inputs[0].parameters.insert(
                    "shared_memory_region".into(),
                    v2::InferParameter {
                        parameter_choice: Some(v2::infer_parameter::ParameterChoice::StringParam(
                            "r".into(),
                        )),
                    },
                );
            }),
            Code::InvalidArgument,
            "shared-memory extension is not supported",
        ),
        (
            "shape mismatch",
            with(|r| r.inputs[0].shape = vec![2, 4]),
            Code::InvalidArgument,
            "8 elements but 4",
        ),
        (
            "wrong shape for the model",
            with(|r| r.inputs[0].shape = vec![2, 2]),
            Code::InvalidArgument,
            "shape [2, 2]",
        ),
        (
            "negative dimension",
            with(|r| r.inputs[0].shape = vec![-1, 4]),
            Code::InvalidArgument,
            "negative",
        ),
        (
            "empty tensor",
            with(|r| {
                r.inputs[0].shape = vec![0, 4];
                r.inputs[0].contents = Some(Default::default());
            }),
            Code::InvalidArgument,
            "empty",
        ),
        (
            "raw count",
            with(|r| r.raw_input_contents = vec![Default::default(), Default::default()]),
            Code::InvalidArgument,
            "raw_input_contents",
        ),
        (
            "raw too short",
            with(|r| {
                r.inputs[0].contents = None;
                r.raw_input_contents = vec![vec![0u8; 15].into()];
            }),
            Code::InvalidArgument,
            "15 bytes",
        ),
        (
            "FP16 typed",
            with(|r| r.inputs[0].datatype = "FP16".into()),
            Code::InvalidArgument,
            "FP16",
        ),
        (
            "unknown output",
            with(|r| {
                r.outputs = vec![InferRequestedOutputTensor {
                    name: "x".into(),
                    parameters: HashMap::new(),
                }]
            }),
            Code::InvalidArgument,
            "no output",
        ),
        (
            "bad timeout parameter",
            with(|r| {
                r.parameters.insert(
                    "timeout".into(),
                    v2::InferParameter {
                        parameter_choice: Some(v2::infer_parameter::ParameterChoice::StringParam(
                            "1s".into(),
                        )),
                    },
                );
            }),
            Code::InvalidArgument,
            "timeout",
        ),
    ];
    for (what, request, code, message) in cases {
        let status = client.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(message),
            "{what}: {:?}",
            status.message()
        );
    }
    let status = client
        .model_metadata(v2::ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v2_repository_index_load_unload() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let index = |ready| v2::RepositoryIndexRequest {
        repository_name: String::new(),
        ready,
    };
    let names = |r: &v2::RepositoryIndexResponse| {
        r.models
            .iter()
            .map(|m| format!("{}/{}/{}", m.name, m.version, m.state))
            .collect::<Vec<_>>()
    };
    let all = client
        .repository_index(index(false))
        .await
        .unwrap()
        .into_inner();
    assert!(
        names(&all).contains(&"iris_lr/2/AVAILABLE".to_string()),
        "{:?}",
        names(&all)
    );

    let unload = |name: &str| v2::RepositoryModelUnloadRequest {
        repository_name: String::new(),
        model_name: name.into(),
        parameters: HashMap::new(),
    };
    let load = |name: &str| v2::RepositoryModelLoadRequest {
        repository_name: String::new(),
        model_name: name.into(),
        parameters: HashMap::new(),
    };
    client
        .repository_model_unload(unload("iris_dt"))
        .await
        .unwrap();
    let ready = client
        .repository_index(index(true))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !names(&ready).iter().any(|n| n.starts_with("iris_dt/")),
        "{:?}",
        names(&ready)
    );
    // The full index still lists the unloaded model, UNAVAILABLE with a reason.
    let all = client
        .repository_index(index(false))
        .await
        .unwrap()
        .into_inner();
    let unloaded = all
        .models
        .iter()
        .find(|m| m.name == "iris_dt" && m.state == "UNAVAILABLE")
        .unwrap_or_else(|| panic!("iris_dt not listed: {:?}", names(&all)));
    assert!(unloaded.reason.contains("unloaded"), "{unloaded:?}");
    let infer = infer_request(
        "iris_dt",
        vec![v2_input(
            "input",
            "FP32",
            &[1, 4],
            f32_contents(&[vec![5.1, 3.5, 1.4, 0.2]]),
        )],
    );
    assert_eq!(
        client.model_infer(infer.clone()).await.unwrap_err().code(),
        Code::NotFound
    );

    // A model added to the repository after start-up loads on request.
    install_model(
        repo.path(),
        "iris_new",
        1,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    client
        .repository_model_load(load("iris_new"))
        .await
        .unwrap();
    client.repository_model_load(load("iris_dt")).await.unwrap();
    assert!(client.model_infer(infer).await.is_ok());
    let ready = client
        .repository_index(index(true))
        .await
        .unwrap()
        .into_inner();
    assert!(
        names(&ready).contains(&"iris_new/1/AVAILABLE".to_string()),
        "{:?}",
        names(&ready)
    );

    for (status, code) in [
        (
            client
                .repository_model_load(load("nope"))
                .await
                .unwrap_err(),
            Code::NotFound,
        ),
        (
            client
                .repository_model_load(load("../etc"))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
        ),
        (
            client
                .repository_model_unload(unload("nope"))
                .await
                .unwrap_err(),
            Code::NotFound,
        ),
        (
            client
                .repository_index(v2::RepositoryIndexRequest {
                    repository_name: "other".into(),
                    ready: false,
                })
                .await
                .unwrap_err(),
            Code::NotFound,
        ),
    ] {
        assert_eq!(status.code(), code, "{status:?}");
    }
    server.stop().await;
}
