//! TensorFlow SavedModels (issue 16) over every API, against the outputs TensorFlow
//! itself gave for the same inputs (`tests/fixtures/tensorflow/<model>/expected.json`,
//! written by `python/make_tf_models.py`).
//!
//! The TensorFlow libraries come from `FERROSERVE_TENSORFLOW_PATH`, else from the
//! `.venv-tf` environment `scripts/setup.sh` makes.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    assert_close, copy_dir, data_of, nest, root_path, shape_of, tensorflow_dir, test_settings,
    TestServer,
};
use ferroserve::settings::Settings;
use ferroserve_proto::prost::Message;
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec};
use ferroserve_proto::tensorflow::{
    tensor_shape_proto, DataType as Dt, TensorProto, TensorShapeProto,
};
use serde_json::{json, Value};
use tonic::transport::Channel;

const FIXTURES: [&str; 4] = ["mlp", "cnn", "multi", "text"];

/// A repository with the fixture SavedModels as version 1 of models of their names.
fn repo(models: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in models {
        copy_dir(
            &root_path(&format!("tests/fixtures/tensorflow/{m}/1")),
            &dir.path().join(m).join("1"),
        );
    }
    dir
}

fn settings(repo: &Path) -> Settings {
    Settings {
        tensorflow_path: Some(tensorflow_dir()),
        ..test_settings(repo)
    }
}

fn expected(model: &str) -> Value {
    let text = std::fs::read_to_string(root_path(&format!(
        "tests/fixtures/tensorflow/{model}/expected.json"
    )))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn flatten(v: &Value, into: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, into)),
        other => into.push(other.clone()),
    }
}

/// Asserts flat values equal TensorFlow's: floats within 1e-6 relative, the rest exactly.
fn assert_values(actual: &[Value], want: &Value, what: &str) {
    let data = data_of(want);
    assert_eq!(actual.len(), data.len(), "{what}: {actual:?} vs {data:?}");
    let float = want["dtype"].as_str().unwrap().starts_with("float");
    for (i, (a, e)) in actual.iter().zip(data).enumerate() {
        if float {
            assert_close(
                a.as_f64().unwrap(),
                e.as_f64().unwrap(),
                1e-6,
                &format!("{what}[{i}]"),
            );
        } else {
            assert_eq!(a, e, "{what}[{i}]");
        }
    }
}

fn assert_nested(actual: &Value, want: &Value, what: &str) {
    let mut flat = Vec::new();
    flatten(actual, &mut flat);
    assert_values(&flat, want, what);
}

fn object<'a>(v: &'a Value, what: &str) -> &'a serde_json::Map<String, Value> {
    v.as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {v}"))
}

/// TF Serving REST, columnar and row format, with `signature_name`.
async fn check_rest(server: &TestServer, model: &str, signature: &str, case: &Value) {
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

fn proto_shape(shape: &[usize]) -> Option<TensorShapeProto> {
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

fn from_proto(p: &TensorProto) -> Vec<Value> {
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

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.grpc_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// TF Serving gRPC Predict with `ModelSpec.signature_name`.
async fn check_grpc(server: &TestServer, model: &str, signature: &str, case: &Value) {
    let mut client = PredictionServiceClient::new(channel(server).await);
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
    let mut client = PredictionServiceClient::new(channel(server).await);
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
    let mut client = PredictionServiceClient::new(channel(&server).await);
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

/// Polls a model's version status until it leaves loading, with a deadline.
async fn settled_status(server: &TestServer, model: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = server.get(&format!("/v1/models/{model}")).await;
        if status == 200 {
            let v = &body["model_version_status"][0];
            if matches!(v["state"].as_str(), Some("AVAILABLE" | "ERROR" | "END")) {
                return v.clone();
            }
        }
        assert!(Instant::now() < deadline, "{model} did not settle: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_saved_models_go_to_error_with_tensorflows_message() {
    let repo = repo(&["mlp"]);
    let root = repo.path();
    // A corrupt saved_model.pb.
    copy_dir(&root.join("mlp/1"), &root.join("corrupt/1"));
    std::fs::write(
        root.join("corrupt/1/saved_model.pb"),
        b"\x08\xff\xff not a protobuf",
    )
    .unwrap();
    // Variables missing.
    copy_dir(&root.join("mlp/1"), &root.join("novars/1"));
    std::fs::remove_dir_all(root.join("novars/1/variables")).unwrap();
    // A tag set the SavedModel does not have.
    copy_dir(&root.join("mlp/1"), &root.join("gpu/1"));
    std::fs::write(
        root.join("gpu/config.toml"),
        "[tensorflow]\ntags = [\"serve\", \"gpu\"]\n",
    )
    .unwrap();

    let server = TestServer::start_with(settings(root)).await;
    assert_eq!(settled_status(&server, "mlp").await["state"], "AVAILABLE");
    for (model, words) in [
        ("corrupt", &["Read less bytes than requested"][..]),
        ("novars", &["variables"][..]),
        ("gpu", &["gpu", "serve"][..]),
    ] {
        let v = settled_status(&server, model).await;
        assert_eq!(v["state"], "END", "{model}: {v}");
        let message = v["status"]["error_message"].as_str().unwrap();
        assert!(
            message.contains("cannot load TensorFlow SavedModel"),
            "{model}: {message}"
        );
        for word in words {
            assert!(message.contains(word), "{model}: {message}");
        }
        assert!(
            !message.contains(&*root.to_string_lossy()),
            "{model}: the server's path leaks: {message}"
        );
    }
    server.stop().await;
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that lives for the call.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "{}",
        path.display()
    );
}

/// On drop, opens each FIFO for writing without waiting and closes it: a reader
/// still waiting on one (TensorFlow, were the check gone) gets end of file and lets
/// its thread go, so a failing test ends rather than hanging at shutdown.
struct ReleaseFifos(Vec<std::path::PathBuf>);

impl Drop for ReleaseFifos {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt as _;
        for fifo in &self.0 {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fifo);
        }
    }
}

/// A SavedModel whose variables shard was a FIFO stayed LOADING for ever, TensorFlow
/// waiting for a writer, and the model could be neither unloaded nor deleted; a FIFO
/// named `saved_model.pb` was reported as "no model artifact recognised in
/// fingerprint.pb". Each now goes to ERROR before TensorFlow is called, naming the
/// entry and what it is, and the model can be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_model_with_a_fifo_is_error_naming_it_and_can_be_deleted() {
    let repo = repo(&["mlp"]);
    let root = repo.path();
    copy_dir(&root.join("mlp/1"), &root.join("fifo_var/1"));
    let shard = root.join("fifo_var/1/variables/variables.data-00000-of-00001");
    std::fs::remove_file(&shard).unwrap();
    mkfifo(&shard);
    copy_dir(&root.join("mlp/1"), &root.join("fifo_pb/1"));
    let graph = root.join("fifo_pb/1/saved_model.pb");
    std::fs::remove_file(&graph).unwrap();
    mkfifo(&graph);
    // A link (followed) to a device that never ends, among the assets.
    copy_dir(&root.join("mlp/1"), &root.join("device/1"));
    std::fs::create_dir_all(root.join("device/1/assets")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", root.join("device/1/assets/vocab.txt")).unwrap();
    let _release = ReleaseFifos(vec![shard, graph]);

    let server = TestServer::start_with(settings(root)).await;
    assert_eq!(settled_status(&server, "mlp").await["state"], "AVAILABLE");
    for (model, words) in [
        (
            "fifo_var",
            "variables/variables.data-00000-of-00001: it is a FIFO (named pipe), not a regular file",
        ),
        (
            "fifo_pb",
            "saved_model.pb: it is a FIFO (named pipe), not a regular file",
        ),
        (
            "device",
            "assets/vocab.txt: it is a device, not a regular file",
        ),
    ] {
        let v = settled_status(&server, model).await;
        assert_eq!(v["state"], "END", "{model}: {v}");
        let message = v["status"]["error_message"].as_str().unwrap();
        assert!(
            message.contains("cannot load TensorFlow SavedModel") && message.contains(words),
            "{model}: {message}"
        );
        assert!(
            !message.contains(&*root.to_string_lossy()),
            "{model}: the server's path leaks: {message}"
        );
    }
    let r = server
        .client
        .delete(server.url("/delete_model/fifo_var"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(!root.join("fifo_var").exists());
    assert_eq!(settled_status(&server, "mlp").await["state"], "AVAILABLE");
    server.stop().await;
}

/// The check before TensorFlow reads a SavedModel follows links, into directories
/// too, walks a link loop once, leaves files TensorFlow does not read alone, and
/// ends on any tree.
#[test]
fn the_saved_model_check_follows_links_and_always_ends() {
    use ferroserve::backends::tensorflow::{check_regular_files, MAX_SAVED_MODEL_ENTRIES};
    let repo = repo(&["mlp"]);
    let dir = repo.path().join("mlp/1");
    assert_eq!(check_regular_files(&dir), Ok(()));

    // Variables on other storage, through a link; a loop back into the version.
    let elsewhere = tempfile::tempdir().unwrap();
    copy_dir(&dir.join("variables"), &elsewhere.path().join("variables"));
    std::fs::remove_dir_all(dir.join("variables")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("variables"), dir.join("variables")).unwrap();
    std::fs::create_dir_all(dir.join("assets/sub")).unwrap();
    std::os::unix::fs::symlink("..", dir.join("assets/sub/up")).unwrap();
    std::os::unix::fs::symlink("missing", dir.join("assets/dangling")).unwrap();
    // Not TensorFlow's to read: the server reads these itself, as regular files.
    mkfifo(&dir.join("assets.extra"));
    mkfifo(&dir.join("warmup.json"));
    assert_eq!(check_regular_files(&dir), Ok(()));

    // A FIFO reached through the linked directory is named by its path in the version.
    mkfifo(
        &elsewhere
            .path()
            .join("variables/variables.data-00000-of-00001.tmp"),
    );
    assert_eq!(
        check_regular_files(&dir),
        Err(
            "variables/variables.data-00000-of-00001.tmp: it is a FIFO (named pipe), not a \
             regular file"
                .to_string()
        )
    );
    std::fs::remove_file(
        elsewhere
            .path()
            .join("variables/variables.data-00000-of-00001.tmp"),
    )
    .unwrap();
    let socket = std::os::unix::net::UnixListener::bind(dir.join("assets/sub/s")).unwrap();
    assert_eq!(
        check_regular_files(&dir),
        Err("assets/sub/s: it is a socket, not a regular file".to_string())
    );
    drop(socket);
    std::fs::remove_file(dir.join("assets/sub/s")).unwrap();

    std::fs::remove_file(dir.join("fingerprint.pb")).unwrap();
    std::fs::create_dir(dir.join("fingerprint.pb")).unwrap();
    assert_eq!(
        check_regular_files(&dir),
        Err("fingerprint.pb: it is a directory, not a regular file".to_string())
    );
    std::fs::remove_dir(dir.join("fingerprint.pb")).unwrap();

    let many = dir.join("assets/many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..MAX_SAVED_MODEL_ENTRIES {
        std::fs::write(many.join(i.to_string()), b"").unwrap();
    }
    let e = check_regular_files(&dir).unwrap_err();
    assert!(e.contains("more than 10000 entries"), "{e}");
}

/// `[tensorflow]` thread counts past 1024 are a config error naming the bound: a
/// pool of 100,000 threads kept the version LOADING for minutes while the server grew
/// by gigabytes, and 2^32 - 1 wrapped to -1 in TensorFlow's `ConfigProto`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_counts_past_the_bound_are_a_config_error() {
    let repo = repo(&["mlp"]);
    let root = repo.path();
    for (model, line) in [
        ("intra", "intra_op_threads = 100000"),
        ("inter", "inter_op_threads = 4294967295"),
    ] {
        copy_dir(&root.join("mlp/1"), &root.join(format!("{model}/1")));
        std::fs::write(
            root.join(format!("{model}/config.toml")),
            format!("[tensorflow]\n{line}\n"),
        )
        .unwrap();
    }
    let server = TestServer::start_with(settings(root)).await;
    assert_eq!(settled_status(&server, "mlp").await["state"], "AVAILABLE");
    let (code, status) = server.get("/models/status").await;
    assert_eq!(code, 200);
    for (model, setting) in [("intra", "intra_op_threads"), ("inter", "inter_op_threads")] {
        let entry = status["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model_id"] == model)
            .unwrap_or_else(|| panic!("{model} not in {status}"));
        let error = entry["config_error"].as_str().unwrap_or_default();
        assert!(
            error.contains(setting) && error.contains("1024"),
            "{model}: {entry}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_library_a_saved_model_is_error_and_other_models_serve() {
    let repo = repo(&["mlp"]);
    common::install_model(
        repo.path(),
        "iris",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let bogus = tempfile::tempdir().unwrap();
    let settings = Settings {
        tensorflow_path: Some(bogus.path().to_path_buf()),
        ..test_settings(repo.path())
    };
    let server = TestServer::start_with(settings).await;
    let v = settled_status(&server, "mlp").await;
    assert_eq!(v["state"], "END", "{v}");
    let message = v["status"]["error_message"].as_str().unwrap();
    assert!(
        message.contains("libtensorflow_cc.so.2") && message.contains("--tensorflow-path"),
        "{message}"
    );
    assert_eq!(settled_status(&server, "iris").await["state"], "AVAILABLE");
    server.stop().await;
}

/// The versions of `model` the server serves now.
async fn served_versions(server: &TestServer, model: &str) -> Vec<u64> {
    let (_, body) = server.get(&format!("/v1/models/{model}")).await;
    let mut versions: Vec<u64> = body["model_version_status"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|v| v["state"] == "AVAILABLE")
                .map(|v| v["version"].as_str().unwrap().parse().unwrap())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_saved_model_version_replaces_the_old_under_load_with_no_failure() {
    let repo = repo(&["mlp"]);
    let root = repo.path().to_path_buf();
    let server = TestServer::start_with(settings(&root)).await;
    assert_eq!(served_versions(&server, "mlp").await, [1]);
    let case = &expected("mlp")["serving_default"];
    let columns =
        json!({"inputs": {"features": nest(data_of(&case["inputs"]["features"]), &[5, 4])}});

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (client, url, body, stop) = (
            server.client.clone(),
            server.url("/v1/models/mlp:predict"),
            columns.to_string(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut answers: Vec<(u16, String)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client.post(&url).body(body.clone()).send().await.unwrap();
                answers.push((r.status().as_u16(), r.text().await.unwrap()));
            }
            answers
        }));
    }
    // Version 2 appears whole (copied aside, then renamed in), as a deployment would.
    copy_dir(&root.join("mlp/1"), &root.join("mlp/.incoming"));
    std::fs::rename(root.join("mlp/.incoming"), root.join("mlp/2")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while served_versions(&server, "mlp").await != [2] {
        assert!(
            Instant::now() < deadline,
            "version 2 did not replace version 1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Some more requests on version 2 alone, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        for (status, body) in client.await.unwrap() {
            assert_eq!(status, 200, "{body}");
            let answer: Value = serde_json::from_str(&body).unwrap();
            assert_nested(
                &answer["outputs"],
                &case["outputs"]["probabilities"],
                "hot swap",
            );
            total += 1;
        }
    }
    assert!(total > 4, "only {total} requests were sent");
    server.stop().await;
}

/// A tf.Example from TF Serving REST's JSON features, as `tf_example` in
/// python/make_tf_models.py builds it.
fn tf_example(features: &Value) -> ferroserve_proto::tensorflow::Example {
    use ferroserve_proto::tensorflow::{
        feature, BytesList, Example, Feature, Features, FloatList, Int64List,
    };
    let feature = |v: &Value| {
        let values: Vec<Value> = match v {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        let kind = if values.iter().all(Value::is_i64) {
            feature::Kind::Int64List(Int64List {
                value: values.iter().map(|v| v.as_i64().unwrap()).collect(),
            })
        } else if values.iter().all(Value::is_number) {
            feature::Kind::FloatList(FloatList {
                value: values.iter().map(|v| v.as_f64().unwrap() as f32).collect(),
            })
        } else {
            feature::Kind::BytesList(BytesList {
                value: values
                    .iter()
                    .map(|v| v.as_str().unwrap().as_bytes().to_vec())
                    .collect(),
            })
        };
        Feature { kind: Some(kind) }
    };
    Example {
        features: Some(Features {
            feature: object(features, "features")
                .iter()
                .map(|(k, v)| (k.clone(), feature(v)))
                .collect(),
        }),
    }
}

/// `[[label, score], ...]` per example, labels exact and scores within 1e-6.
fn assert_classes(got: &[Vec<(String, f64)>], want: &Value, what: &str) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
    for (i, (row, expected)) in got.iter().zip(want).enumerate() {
        let expected = expected.as_array().unwrap();
        assert_eq!(row.len(), expected.len(), "{what}[{i}]: {row:?}");
        for (j, ((label, score), e)) in row.iter().zip(expected).enumerate() {
            assert_eq!(label, e[0].as_str().unwrap(), "{what}[{i}][{j}] label");
            assert_close(
                *score,
                e[1].as_f64().unwrap(),
                1e-6,
                &format!("{what}[{i}][{j}]"),
            );
        }
    }
}

fn rest_classes(body: &Value) -> Vec<Vec<(String, f64)>> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {body}"))
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|pair| {
                    (
                        pair[0].as_str().unwrap().to_string(),
                        pair[1].as_f64().unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

fn grpc_classes(result: &tfs::ClassificationResult) -> Vec<Vec<(String, f64)>> {
    result
        .classifications
        .iter()
        .map(|c| {
            c.classes
                .iter()
                .map(|class| (class.label.clone(), class.score as f64))
                .collect()
        })
        .collect()
}

fn example_list(examples: &Value) -> Option<tfs::Input> {
    Some(tfs::Input {
        kind: Some(tfs::input::Kind::ExampleList(tfs::ExampleList {
            examples: examples
                .as_array()
                .unwrap()
                .iter()
                .map(tf_example)
                .collect(),
        })),
    })
}

fn spec(model: &str, signature: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: model.into(),
        signature_name: signature.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_and_regress_signatures_answer_like_tensorflow() {
    let repo = repo(&["tf1_classifier", "mlp"]);
    let server = TestServer::start_with(settings(repo.path())).await;
    let exp = expected("tf1_classifier");
    let examples = &exp["examples"];
    let path = "/v1/models/tf1_classifier";

    // REST :classify, the default signature and a scores-only one.
    for signature in ["serving_default", "scores_only"] {
        let mut body = json!({ "examples": examples });
        if signature != "serving_default" {
            body["signature_name"] = json!(signature);
        }
        let (status, answer) = server.post_json(&format!("{path}:classify"), &body).await;
        assert_eq!(status, 200, "{signature}: {answer}");
        assert_classes(
            &rest_classes(&answer),
            &exp["classify"][signature],
            &format!("REST classify {signature}"),
        );
    }
    // With a context: each example gets the context's features.
    let (status, answer) = server
        .post_json(
            &format!("{path}:classify"),
            &json!({
                "signature_name": "classification",
                "context": exp["context"],
                "examples": exp["examples_with_context"],
            }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_classes(
        &rest_classes(&answer),
        &exp["classify_with_context"],
        "REST classify with context",
    );
    // REST :regress.
    let (status, answer) = server
        .post_json(
            &format!("{path}:regress"),
            &json!({"signature_name": "regression", "examples": examples}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let values: Vec<Value> = answer["results"].as_array().unwrap().clone();
    assert_values(
        &values,
        &json!({"dtype": "float32", "data": exp["regress"]}),
        "REST regress",
    );

    // gRPC Classify and Regress with the real messages.
    let mut client = PredictionServiceClient::new(channel(&server).await);
    let response = client
        .classify(tfs::ClassificationRequest {
            model_spec: spec("tf1_classifier", ""),
            input: example_list(examples),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.model_spec.as_ref().unwrap().signature_name,
        "serving_default"
    );
    assert_classes(
        &grpc_classes(response.result.as_ref().unwrap()),
        &exp["classify"]["serving_default"],
        "gRPC classify",
    );
    let context_input = tfs::Input {
        kind: Some(tfs::input::Kind::ExampleListWithContext(
            tfs::ExampleListWithContext {
                examples: exp["examples_with_context"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(tf_example)
                    .collect(),
                context: Some(tf_example(&exp["context"])),
            },
        )),
    };
    let response = client
        .classify(tfs::ClassificationRequest {
            model_spec: spec("tf1_classifier", "classification"),
            input: Some(context_input),
        })
        .await
        .unwrap()
        .into_inner();
    assert_classes(
        &grpc_classes(response.result.as_ref().unwrap()),
        &exp["classify_with_context"],
        "gRPC classify with context",
    );
    let response = client
        .regress(tfs::RegressionRequest {
            model_spec: spec("tf1_classifier", "regression"),
            input: example_list(examples),
        })
        .await
        .unwrap()
        .into_inner();
    let values: Vec<Value> = response
        .result
        .unwrap()
        .regressions
        .iter()
        .map(|r| json!(r.value as f64))
        .collect();
    assert_values(
        &values,
        &json!({"dtype": "float32", "data": exp["regress"]}),
        "gRPC regress",
    );

    // MultiInference: a classify and a regress task over the same examples.
    let response = client
        .multi_inference(tfs::MultiInferenceRequest {
            tasks: vec![
                tfs::InferenceTask {
                    model_spec: spec("tf1_classifier", "classification"),
                    method_name: "tensorflow/serving/classify".into(),
                },
                tfs::InferenceTask {
                    model_spec: spec("tf1_classifier", "regression"),
                    method_name: "tensorflow/serving/regress".into(),
                },
            ],
            input: example_list(examples),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results.len(), 2);
    // Each result names its task's signature (all said serving_default).
    let names: Vec<&str> = response
        .results
        .iter()
        .map(|r| r.model_spec.as_ref().unwrap().signature_name.as_str())
        .collect();
    assert_eq!(names, ["classification", "regression"]);
    match &response.results[0].result {
        Some(tfs::inference_result::Result::ClassificationResult(r)) => assert_classes(
            &grpc_classes(r),
            &exp["classify"]["serving_default"],
            "MultiInference classify",
        ),
        other => panic!("MultiInference task 0 gave {other:?}"),
    }
    match &response.results[1].result {
        Some(tfs::inference_result::Result::RegressionResult(r)) => assert_values(
            &r.regressions
                .iter()
                .map(|v| json!(v.value as f64))
                .collect::<Vec<_>>(),
            &json!({"dtype": "float32", "data": exp["regress"]}),
            "MultiInference regress",
        ),
        other => panic!("MultiInference task 1 gave {other:?}"),
    }

    // The predict signature over the serialized examples, as TF Serving gets them.
    let serialized: Vec<Vec<u8>> = examples
        .as_array()
        .unwrap()
        .iter()
        .map(|e| tf_example(e).encode_to_vec())
        .collect();
    let response = client
        .predict(tfs::PredictRequest {
            model_spec: spec("tf1_classifier", "predict"),
            inputs: HashMap::from([(
                "examples".to_string(),
                TensorProto {
                    dtype: Dt::DtString as i32,
                    tensor_shape: proto_shape(&[serialized.len()]),
                    string_val: serialized,
                    ..Default::default()
                },
            )]),
            output_filter: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_values(
        &from_proto(&response.outputs["scores"]),
        &exp["predict"]["scores"],
        "gRPC predict on examples",
    );

    // Signatures that cannot classify or regress: 400 / INVALID_ARGUMENT, saying why.
    for (model, verb, body, words) in [
        (
            "tf1_classifier",
            "regress",
            json!({"examples": examples}),
            &["\"serving_default\"", "outputs"][..],
        ),
        (
            "tf1_classifier",
            "classify",
            json!({"signature_name": "regression", "examples": examples}),
            &["\"classes\"", "\"scores\""][..],
        ),
        (
            "tf1_classifier",
            "classify",
            json!({"signature_name": "nope", "examples": examples}),
            &["\"nope\"", "\"regression\""][..],
        ),
        (
            "mlp",
            "classify",
            json!({"examples": [{"features": [1.0, 2.0, 3.0, 4.0]}]}),
            &["serialized tf.Example"][..],
        ),
        (
            "tf1_classifier",
            "classify",
            json!({"examples": [{"x": "not a number"}]}),
            &["x"][..],
        ),
    ] {
        let (status, answer) = server
            .post_json(&format!("/v1/models/{model}:{verb}"), &body)
            .await;
        assert_eq!(status, 400, "{model}:{verb} {body}: {answer}");
        let message = answer["error"].as_str().unwrap();
        for word in words {
            assert!(message.contains(word), "{model}:{verb}: {message}");
        }
    }
    let err = client
        .regress(tfs::RegressionRequest {
            model_spec: spec("tf1_classifier", "scores_only"),
            input: example_list(examples),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    server.stop().await;
}

/// Frames a message as field `tag` of an enclosing message.
fn field(tag: u32, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ferroserve_proto::prost::encoding::encode_key(
        tag,
        ferroserve_proto::prost::encoding::WireType::LengthDelimited,
        &mut out,
    );
    ferroserve_proto::prost::encoding::encode_varint(inner.len() as u64, &mut out);
    out.extend_from_slice(inner);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_warmup_records_are_replayed_and_a_broken_file_fails_the_load() {
    const WARMUP: &str = "1/assets.extra/tf_serving_warmup_requests";
    let repo = repo(&["tf1_classifier"]);
    let root = repo.path();
    let good = std::fs::read(root.join("tf1_classifier").join(WARMUP)).unwrap();
    assert_eq!(
        ferroserve::tfrecord::read_records(&good, 1000)
            .unwrap()
            .len(),
        4,
        "the fixture has a Classify, Regress, Predict and MultiInference record"
    );
    let variant = |name: &str, bytes: &[u8]| {
        copy_dir(&root.join("tf1_classifier/1"), &root.join(name).join("1"));
        std::fs::write(root.join(name).join(WARMUP), bytes).unwrap();
    };
    // Cut in the middle of the last record.
    variant("truncated", &good[..good.len() - 3]);
    // One byte of the first record's data changed.
    let mut flipped = good.clone();
    flipped[20] ^= 0x40;
    variant("corrupt", &flipped);
    // Well framed, but not a PredictionLog.
    variant(
        "garbage",
        &ferroserve::tfrecord::write_records([&b"\xff\xff\xff not a proto"[..]]),
    );
    // A valid Predict record on a signature the model lacks: it fails when replayed.
    let request = tfs::PredictRequest {
        model_spec: spec("m", "nope"),
        inputs: HashMap::new(),
        output_filter: vec![],
    };
    let log = field(6, &field(1, &request.encode_to_vec()));
    variant("failing", &ferroserve::tfrecord::write_records([&log[..]]));

    let server = TestServer::start_with(settings(root)).await;
    assert_eq!(
        settled_status(&server, "tf1_classifier").await["state"],
        "AVAILABLE"
    );
    let exp = expected("tf1_classifier");
    let (status, answer) = server
        .post_json(
            "/v1/models/tf1_classifier:classify",
            &json!({ "examples": exp["examples"] }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    for (model, words) in [
        ("truncated", &["record 3", "truncated"][..]),
        ("corrupt", &["record 0", "checksum"][..]),
        ("garbage", &["record 0", "not a PredictionLog"][..]),
        ("failing", &["record 0", "\"nope\""][..]),
    ] {
        let v = settled_status(&server, model).await;
        assert_eq!(v["state"], "END", "{model}: {v}");
        let message = v["status"]["error_message"].as_str().unwrap();
        assert!(
            message.contains("assets.extra/tf_serving_warmup_requests"),
            "{model}: {message}"
        );
        for word in words {
            assert!(message.contains(word), "{model}: {message}");
        }
    }
    server.stop().await;
}

/// SIGTERM while a SavedModel version is still warming up: the process exits once it
/// has shut down, without waiting for the warm-up. Before, dropping the async runtime
/// waited for every blocking task, the load among them: the process went on after it
/// had logged "shut down", for as long as the warm-up took (here, hours).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_version_still_warming_up() {
    use common::child::{free_port, ChildServer};
    let repo = repo(&["mlp"]);
    let root = repo.path();
    // The `slow` fixture loops `n` times: a warm-up record with n = 2^31 - 1 keeps
    // the version LOADING far longer than this test lasts.
    let staging = root.join(".staging");
    copy_dir(&root_path("tests/fixtures/tensorflow/slow/1"), &staging);
    let request = tfs::PredictRequest {
        model_spec: spec("slow", "serving_default"),
        inputs: HashMap::from([(
            "n".to_string(),
            TensorProto {
                dtype: Dt::DtInt32 as i32,
                tensor_shape: proto_shape(&[1]),
                int_val: vec![i32::MAX],
                ..Default::default()
            },
        )]),
        output_filter: vec![],
    };
    let log = field(6, &field(1, &request.encode_to_vec()));
    std::fs::create_dir_all(staging.join("assets.extra")).unwrap();
    std::fs::write(
        staging.join("assets.extra/tf_serving_warmup_requests"),
        ferroserve::tfrecord::write_records([&log[..]]),
    )
    .unwrap();

    let rest: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    command
        .arg("serve")
        .arg("--model-repository")
        .arg(root)
        .args(["--rest-addr", &rest.to_string()])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--file-system-poll-wait-seconds", "0.2"])
        .env("FERROSERVE_TENSORFLOW_PATH", tensorflow_dir());
    let mut server = ChildServer::start(command, rest).await;
    std::fs::create_dir_all(root.join("slow")).unwrap();
    std::fs::write(
        root.join("slow/config.toml"),
        "[tensorflow]\nintra_op_threads = 1\ninter_op_threads = 1\n",
    )
    .unwrap();
    std::fs::rename(&staging, root.join("slow/1")).unwrap();
    // Until the version is LOADING, and a moment more for its warm-up to begin.
    let client = reqwest::Client::new();
    let url = server.url("/v1/models/slow");
    let status = || async {
        let answer = client.get(&url).send().await.unwrap();
        answer.json::<Value>().await.unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = status().await;
        if status["model_version_status"][0]["state"] == "LOADING" {
            break;
        }
        assert!(Instant::now() < deadline, "slow never loaded: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = status().await;
    assert_eq!(
        status["model_version_status"][0]["state"], "LOADING",
        "the warm-up should still run: {status}"
    );
    server.terminate();
    let exit = tokio::task::spawn_blocking(move || {
        let exit = server.wait_exit(Duration::from_secs(20));
        (exit, server)
    })
    .await
    .unwrap();
    let (code, server) = exit;
    assert_eq!(code, Some(0), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_a_named_signature_batch_together() {
    // Its own model name: the metrics registry is the process's, and other tests in
    // this binary serve "multi" at the same time.
    let repo = tempfile::tempdir().unwrap();
    copy_dir(
        &root_path("tests/fixtures/tensorflow/multi/1"),
        &repo.path().join("multi_batched/1"),
    );
    // Four one-row requests close a batch of four (a preferred size); the long delay
    // would show if they ran one by one.
    std::fs::write(
        repo.path().join("multi_batched/config.toml"),
        "[batching]\nenabled = true\nmax_batch_size = 4\npreferred_batch_sizes = [4]\n\
         max_queue_delay_micros = 5000000\n",
    )
    .unwrap();
    let server = TestServer::start_with(settings(repo.path())).await;
    assert_eq!(
        settled_status(&server, "multi_batched").await["state"],
        "AVAILABLE"
    );
    let started = Instant::now();
    let mut requests = Vec::new();
    for i in 0..4u8 {
        let (client, url) = (
            server.client.clone(),
            server.url("/v1/models/multi_batched:predict"),
        );
        let body = json!({
            "signature_name": "combine",
            "inputs": {"a": [[f64::from(i) + 0.5, -1.25]], "b": [[i, 200 - i]]},
        });
        requests.push(tokio::spawn(async move {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (
                status,
                serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap(),
            )
        }));
    }
    for (i, request) in requests.into_iter().enumerate() {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let i = i as f64;
        // Each request gets its own row back: a + b and max(b).
        assert_eq!(
            body["outputs"]["sum"],
            json!([[i + 0.5 + i, -1.25 + 200.0 - i]]),
            "{body}"
        );
        assert_eq!(body["outputs"]["max_b"], json!([200 - i as i64]), "{body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the batch waited for its delay: {:?}",
        started.elapsed()
    );
    let (_, metrics) = server.get("/metrics").await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("ferroserve_batch_size_count{model=\"multi_batched\",version=\"1\"} 1")
            && metrics
                .contains("ferroserve_batch_size_sum{model=\"multi_batched\",version=\"1\"} 4"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("batch_size"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    server.stop().await;
}

/// A run past its request's deadline is cancelled by TensorFlow (RunOptions'
/// timeout, as TF Serving passes it): it answered 504 but ran on, holding the
/// version's thread, so the next request waited for it (and timed out too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_deadline_is_cancelled_and_the_next_request_runs() {
    let repo = repo(&["slow"]);
    std::fs::write(repo.path().join("slow/config.toml"), "timeout_secs = 1.0\n").unwrap();
    let server = TestServer::start_with(Settings {
        inference_threads: 1,
        ..settings(repo.path())
    })
    .await;
    let exp = expected("slow");
    let (status, answer) = server
        .post_json("/v1/models/slow:predict", &json!({"instances": [3]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let mut got = Vec::new();
    flatten(&answer["predictions"], &mut got);
    assert_values(&got, &exp["serving_default"]["outputs"]["y"], "slow");
    // About a minute of matrix products, cut at the deadline.
    let started = std::time::Instant::now();
    let (status, answer) = server
        .post_json(
            "/v1/models/slow:predict",
            &json!({"instances": [50_000_000]}),
        )
        .await;
    assert_eq!(status, 504, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The thread is free again: a short run answers within its own second.
    let (status, answer) = server
        .post_json("/v1/models/slow:predict", &json!({"instances": [3]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    server.stop().await;
}

/// A ferroserve process (the real binary: `main` decides TensorFlow's environment)
/// serving `repo`, with `TF_ENABLE_ONEDNN_OPTS` left as the user would leave it.
async fn child_server(repo: &Path) -> common::child::ChildServer {
    use common::child::{free_port, ChildServer};
    let rest: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    command
        .arg("serve")
        .arg("--model-repository")
        .arg(repo)
        .args(["--rest-addr", &rest.to_string()])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .env("FERROSERVE_TENSORFLOW_PATH", tensorflow_dir())
        .env_remove("TF_ENABLE_ONEDNN_OPTS");
    ChildServer::start(command, rest).await
}

/// A convolution of a signature input of any rank, fed a tensor of rank 3, is
/// TensorFlow's 400, and the server goes on. TensorFlow's oneDNN kernels (on by
/// default in the tensorflow-cpu wheel) aborted the whole process on it (a CHECK in
/// `tensor_format.h`), and failed a max-pool of a 3x3 image with "could not create
/// a descriptor" (500), which TensorFlow's own kernels answer: the server turns
/// them off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_convolution_of_the_wrong_rank_is_400_and_the_server_goes_on() {
    let repo = repo(&["conv_any_rank"]);
    let mut server = child_server(repo.path()).await;
    let client = reqwest::Client::new();
    let url = server.url("/v1/models/conv_any_rank:predict");
    let post = |body: Value| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            match client.post(url).json(&body).send().await {
                Ok(r) => common::status_and_body(r).await,
                Err(e) => (0, json!({ "error": e.to_string() })),
            }
        }
    };
    let (status, answer) = post(json!({"inputs": {"x": [[[1.0], [2.0]], [[3.0], [4.0]]]}})).await;
    assert_eq!(status, 400, "{answer}; the server's log: {}", server.log());
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(message.contains("4-dimensional"), "{message}");

    let exp = expected("conv_any_rank");
    for signature in ["serving_default", "pool"] {
        let case = &exp[signature];
        let inputs: serde_json::Map<String, Value> = object(&case["inputs"], "inputs")
            .iter()
            .map(|(k, t)| (k.clone(), nest(data_of(t), &shape_of(t))))
            .collect();
        let (status, body) = post(json!({"signature_name": signature, "inputs": inputs})).await;
        assert_eq!(status, 200, "{signature}: {body}; {}", server.log());
        let outputs = object(&case["outputs"], "outputs");
        for (name, want) in outputs {
            let got = if outputs.len() == 1 {
                &body["outputs"]
            } else {
                &body["outputs"][name]
            };
            assert_nested(got, want, &format!("{signature} {name}"));
        }
    }
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "{}",
        server.log()
    );
}

/// A SavedModel whose input has no known rank, fed to a convolution, loads: the
/// synthetic warm-up makes up no input for it (it made a scalar zero, on which
/// TensorFlow's oneDNN Conv2D aborted the server while the version loaded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_convolution_of_any_rank_loads_without_a_made_up_warm_up() {
    let repo = repo(&["conv_any_rank"]);
    let server = TestServer::start_with(settings(repo.path())).await;
    assert_eq!(
        settled_status(&server, "conv_any_rank").await["state"],
        "AVAILABLE"
    );
    let exp = expected("conv_any_rank");
    check_rest(
        &server,
        "conv_any_rank",
        "serving_default",
        &exp["serving_default"],
    )
    .await;
    server.stop().await;
}

/// A TF Serving warm-up record's tensors are checked as a live request's are: one that
/// does not fit the signature's shape makes the version ERROR with the message a live
/// request gets, one a request may give (`[1, 8, 8]` for `[-1, 8, 8, 1]`: the trailing
/// dimension of 1 added) runs, and the server goes on. Such tensors reached TensorFlow
/// unchecked, and a rank-3 image for the CNN made its oneDNN Conv2D abort the
/// process, again at every start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warmup_record_of_the_wrong_shape_fails_the_version_and_the_server_goes_on() {
    const WARMUP: &str = "1/assets.extra/tf_serving_warmup_requests";
    let repo = repo(&["cnn"]);
    let root = repo.path();
    let record = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        let request = tfs::PredictRequest {
            model_spec: spec("cnn", "serving_default"),
            inputs: HashMap::from([(
                "image".to_string(),
                TensorProto {
                    dtype: Dt::DtFloat as i32,
                    tensor_shape: proto_shape(shape),
                    float_val: vec![0.5; n],
                    ..Default::default()
                },
            )]),
            output_filter: vec![],
        };
        field(6, &field(1, &request.encode_to_vec()))
    };
    for (name, shape) in [
        ("rank3", &[1, 8, 8][..]),
        ("rank5", &[1, 8, 8, 1, 1][..]),
        ("channels", &[1, 8, 8, 3][..]),
    ] {
        copy_dir(&root.join("cnn/1"), &root.join(name).join("1"));
        std::fs::create_dir_all(root.join(name).join("1/assets.extra")).unwrap();
        std::fs::write(
            root.join(name).join(WARMUP),
            ferroserve::tfrecord::write_records([&record(shape)[..]]),
        )
        .unwrap();
    }
    let server = TestServer::start_with(settings(root)).await;
    for (model, words) in [
        (
            "rank5",
            "has shape [1, 8, 8, 1, 1], but the model takes [-1, 8, 8, 1]",
        ),
        (
            "channels",
            "has shape [1, 8, 8, 3], but the model takes [-1, 8, 8, 1]",
        ),
    ] {
        let v = settled_status(&server, model).await;
        assert_eq!(v["state"], "END", "{model}: {v}");
        let message = v["status"]["error_message"].as_str().unwrap();
        assert!(
            message.contains("record 0") && message.contains(words),
            "{model}: {message}"
        );
    }
    for model in ["rank3", "cnn"] {
        assert_eq!(settled_status(&server, model).await["state"], "AVAILABLE");
        check_rest(
            &server,
            model,
            "serving_default",
            &expected("cnn")["serving_default"],
        )
        .await;
    }
    server.stop().await;
}

/// The simple API on a TF1 classification signature (`classes`, `scores`): the
/// prediction is each row's class with the highest score and the probabilities are
/// the scores. It answered every class name (`classes` alone, which TensorFlow
/// computes without parsing the input) for any input, garbage included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simple_api_on_a_classification_signature_answers_the_top_class() {
    let repo = repo(&["tf1_classifier"]);
    let server = TestServer::start_with(settings(repo.path())).await;
    let (status, answer) = server
        .post_json("/predict/tf1_classifier", &json!({"features": ["garbage"]}))
        .await;
    common::assert_error(status, &answer, 400, "");

    let exp = expected("tf1_classifier");
    let examples = exp["examples"].as_array().unwrap();
    let want = exp["classify"]["serving_default"].as_array().unwrap();
    let mut checked = 0;
    for (example, classes) in examples.iter().zip(want) {
        // A JSON feature is text: only examples whose bytes are UTF-8 can be sent.
        let Ok(text) = String::from_utf8(tf_example(example).encode_to_vec()) else {
            continue;
        };
        let classes = classes.as_array().unwrap();
        let scores: Vec<f64> = classes.iter().map(|c| c[1].as_f64().unwrap()).collect();
        let top =
            (0..scores.len()).fold(0, |best, j| if scores[j] > scores[best] { j } else { best });
        let (status, answer) = server
            .post_json("/predict/tf1_classifier", &json!({ "features": [text] }))
            .await;
        assert_eq!(status, 200, "{example}: {answer}");
        assert_eq!(answer["prediction"], classes[top][0], "{example}: {answer}");
        let probabilities = answer["probabilities"].as_array().unwrap();
        assert_eq!(probabilities.len(), scores.len(), "{answer}");
        for (j, (got, want)) in probabilities.iter().zip(&scores).enumerate() {
            assert_close(got.as_f64().unwrap(), *want, 1e-6, &format!("scores[{j}]"));
        }
        checked += 1;
    }
    assert!(checked > 0, "no example of the fixture is UTF-8");
    server.stop().await;
}
