//! Pre- and post-processing pipelines (issue 15), per version, the same over every
//! API. Fixtures: `tests/fixtures/preprocess/` made by
//! python/make_preprocess_fixtures.py, with numpy's softmax and the classification
//! strings Triton writes (`"%g:index:label"`).
//!
//! Labels: a logits model with `[postprocess] labels, softmax, top_k` answers
//! softmaxed scores (V2 REST/gRPC, TF Serving REST), `"classification": k` on an
//! output gives Triton's strings (V2 REST and gRPC), TF Serving classify (REST and
//! gRPC) gives the top-k labels with their scores; a labels file that does not fit
//! the model fails the load with a clear message.

mod common;

use common::{install_model, root_path, TestServer};
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use ferroserve_proto::inference::{self as v2, infer_parameter, InferTensorContents};
use ferroserve_proto::tensorflow as tf;
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec};
use serde_json::{json, Value};
use tonic::transport::Channel;

const LOGITS: &str = "tests/fixtures/preprocess/logits";
const FEATURES: [&str; 4] = ["a", "b", "c", "d"];

fn expected() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root_path(&format!("{LOGITS}/expected.json"))).unwrap(),
    )
    .unwrap()
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
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// Installs the logits model as `name` with `config` (and its labels.txt, or
/// `labels` instead when given).
fn install(repo: &std::path::Path, name: &str, config: &str, labels: Option<&str>) {
    let dest = install_model(repo, name, 1, &root_path(&format!("{LOGITS}/model.onnx")));
    let labels_path = dest.with_file_name("labels.txt");
    match labels {
        Some(text) => std::fs::write(labels_path, text).unwrap(),
        None => {
            std::fs::copy(root_path(&format!("{LOGITS}/labels.txt")), labels_path).unwrap();
        }
    }
    std::fs::write(repo.join(name).join("config.toml"), config).unwrap();
}

const LABELLED: &str = "feature_names = [\"a\", \"b\", \"c\", \"d\"]\n\
    [postprocess]\nlabels = \"labels.txt\"\nsoftmax = true\ntop_k = 2\n";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn expected_strings(exp: &Value, key: &str, k: usize) -> Vec<String> {
    exp[key][k.to_string()]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(strings)
        .collect()
}

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.grpc_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_softmax_and_classification_answer_as_the_reference_over_every_api() {
    let exp = expected();
    let rows = rows(&exp);
    let n = rows.len();
    let flat: Vec<f32> = rows.concat();
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "labelled", LABELLED, None);
    install(repo.path(), "raw", "", None);
    install(
        repo.path(),
        "short_labels",
        "[postprocess]\nlabels = \"labels.txt\"\n",
        Some("cat\ndog\nbird\n"),
    );
    install(
        repo.path(),
        "no_labels_file",
        "[postprocess]\nlabels = \"classes.txt\"\n",
        None,
    );
    let server = TestServer::start(repo.path()).await;
    let v2_input = json!([{"name": "input", "datatype": "FP32", "shape": [n, 4], "data": flat}]);

    // V2 REST: the score output comes back softmaxed, as numpy's softmax.
    let (status, body) = server
        .post_json("/v2/models/labelled/infer", &json!({"inputs": v2_input}))
        .await;
    assert_eq!(status, 200, "{body}");
    let got = body["outputs"][0]["data"].as_array().unwrap();
    let want: Vec<f64> = exp["softmax"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g.as_f64().unwrap() - w).abs() <= 1e-6, "{g} vs {w}");
    }

    // The classification extension, every k, labelled (softmaxed) and not (raw).
    for k in 1..=4 {
        for (model, key) in [
            ("labelled", "classification_softmax"),
            ("raw", "classification_logits_unlabelled"),
        ] {
            let (status, body) = server
                .post_json(
                    &format!("/v2/models/{model}/infer"),
                    &json!({"inputs": v2_input, "outputs": [
                        {"name": "logits", "parameters": {"classification": k}}
                    ]}),
                )
                .await;
            assert_eq!(status, 200, "{model} k={k}: {body}");
            let out = &body["outputs"][0];
            assert_eq!(out["datatype"], "BYTES", "{body}");
            assert_eq!(out["shape"], json!([n, k]), "{body}");
            assert_eq!(
                strings(&out["data"]),
                expected_strings(&exp, key, k),
                "{model} k={k}"
            );
        }
    }
    // More classes than the model has: every class, as Triton.
    let (status, body) = server
        .post_json(
            "/v2/models/labelled/infer",
            &json!({"inputs": v2_input, "outputs": [
                {"name": "logits", "parameters": {"classification": 10}}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([n, 4]));
    for bad in [json!(0), json!(-1), json!("two"), json!(1.5)] {
        let (status, body) = server
            .post_json(
                "/v2/models/labelled/infer",
                &json!({"inputs": v2_input, "outputs": [
                    {"name": "logits", "parameters": {"classification": bad}}
                ]}),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("classification"),
            "{body}"
        );
    }

    // V2 gRPC: the same strings.
    let mut v2_client = GrpcInferenceServiceClient::new(channel(&server).await);
    let mut parameters = std::collections::HashMap::new();
    parameters.insert(
        "classification".to_string(),
        v2::InferParameter {
            parameter_choice: Some(infer_parameter::ParameterChoice::Int64Param(2)),
        },
    );
    let answer = v2_client
        .model_infer(v2::ModelInferRequest {
            model_name: "labelled".into(),
            inputs: vec![InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![n as i64, 4],
                contents: Some(InferTensorContents {
                    fp32_contents: flat.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            outputs: vec![InferRequestedOutputTensor {
                name: "logits".into(),
                parameters,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let out = &answer.outputs[0];
    assert_eq!(out.datatype, "BYTES");
    assert_eq!(out.shape, vec![n as i64, 2]);
    let got: Vec<String> = match (&out.contents, answer.raw_output_contents.first()) {
        (Some(c), _) => c
            .bytes_contents
            .iter()
            .map(|b| String::from_utf8(b.clone()).unwrap())
            .collect(),
        (None, Some(_)) => panic!("raw output for a JSON-free request"),
        (None, None) => panic!("no contents"),
    };
    assert_eq!(got, expected_strings(&exp, "classification_softmax", 2));

    // TF Serving REST :classify: the top 2 labels with their softmaxed scores.
    let examples: Vec<Value> = rows
        .iter()
        .map(|r| {
            Value::Object(
                FEATURES
                    .iter()
                    .zip(r)
                    .map(|(f, v)| (f.to_string(), json!(v)))
                    .collect(),
            )
        })
        .collect();
    let (status, body) = server
        .post_json(
            "/v1/models/labelled:classify",
            &json!({"examples": examples}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let top2 = exp["classify_top2"].as_array().unwrap();
    let result = body["result"].as_array().unwrap();
    assert_eq!(result.len(), n);
    for (got, want) in result.iter().zip(top2) {
        let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
        assert_eq!(got.len(), 2, "{body}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g[0], w[0], "{body}");
            assert!((g[1].as_f64().unwrap() - w[1].as_f64().unwrap()).abs() <= 1e-6);
        }
    }

    // TF Serving gRPC Classify: the same.
    let mut tfs_client = PredictionServiceClient::new(channel(&server).await);
    let example = |row: &[f32]| tf::Example {
        features: Some(tf::Features {
            feature: FEATURES
                .iter()
                .zip(row)
                .map(|(name, v)| {
                    (
                        name.to_string(),
                        tf::Feature {
                            kind: Some(tf::feature::Kind::FloatList(tf::FloatList {
                                value: vec![*v],
                            })),
                        },
                    )
                })
                .collect(),
        }),
    };
    let classified = tfs_client
        .classify(tfs::ClassificationRequest {
            model_spec: Some(ModelSpec {
                name: "labelled".into(),
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
    let result = classified.result.unwrap();
    for (got, want) in result.classifications.iter().zip(top2) {
        let want = want.as_array().unwrap();
        assert_eq!(got.classes.len(), 2);
        for (g, w) in got.classes.iter().zip(want) {
            assert_eq!(g.label, w[0].as_str().unwrap());
            assert!((g.score as f64 - w[1].as_f64().unwrap()).abs() <= 1e-6);
        }
    }

    // A labels file that does not fit the model, or is missing, fails the load
    // with a message naming the setting.
    for (name, words) in [
        (
            "short_labels",
            "has 3 labels but output \"logits\" has 4 classes",
        ),
        ("no_labels_file", "cannot read classes.txt"),
    ] {
        let (status, body) = server.get(&format!("/v1/models/{name}")).await;
        assert_eq!(status, 200, "{body}");
        let v = &body["model_version_status"][0];
        assert_eq!(v["state"], "END", "{name}: {body}");
        let msg = v["status"]["error_message"].as_str().unwrap();
        assert!(msg.contains("postprocess.labels"), "{name}: {msg}");
        assert!(msg.contains(words), "{name}: {msg}");
        assert!(
            !msg.contains(repo.path().to_str().unwrap()),
            "{name}: {msg}"
        );
    }
    server.stop().await;
}

const IMAGES: &str = "tests/fixtures/preprocess/images";

fn image_cases() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root_path(&format!("{IMAGES}/cases.json"))).unwrap(),
    )
    .unwrap()
}

/// A config's `image` table as TOML (numbers as JSON writes them).
fn image_table(config: &Value) -> String {
    let fields: Vec<String> = config
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    format!("[preprocess]\nimage = {{ {} }}\n", fields.join(", "))
}

/// The reference tensor PIL + numpy made, as f64.
fn reference(case: &Value) -> Vec<f64> {
    let file = case["expected"].as_str().unwrap();
    let bytes = std::fs::read(root_path(&format!("{IMAGES}/{file}"))).unwrap();
    if file.ends_with(".u8") {
        bytes.iter().map(|&b| f64::from(b)).collect()
    } else {
        bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect()
    }
}

/// How many 0-255 pixel levels one unit of the tensor is, for a config.
fn levels_per_unit(config: &Value) -> f64 {
    if config["dtype"] == "uint8" {
        return 1.0;
    }
    let scale = config["scale"].as_f64().unwrap_or(1.0 / 255.0);
    let std = config["std"]
        .as_array()
        .map(|s| s.iter().map(|v| v.as_f64().unwrap()).fold(0.0, f64::max))
        .unwrap_or(1.0);
    std / scale
}

fn numbers(v: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            other => out.push(other.as_f64().unwrap_or_else(|| panic!("{other}"))),
        }
    }
    walk(v, &mut out);
    out
}

/// V2 REST with the binary data extension: one BYTES element per image.
async fn v2_binary_images(server: &TestServer, model: &str, images: &[Vec<u8>]) -> (u16, Value) {
    v2_binary_images_to(server, model, "image", images).await
}

/// [`v2_binary_images`] to the input named `input`.
async fn v2_binary_images_to(
    server: &TestServer,
    model: &str,
    input: &str,
    images: &[Vec<u8>],
) -> (u16, Value) {
    let mut blob = Vec::new();
    for image in images {
        blob.extend_from_slice(&(image.len() as u32).to_le_bytes());
        blob.extend_from_slice(image);
    }
    let header = json!({"inputs": [{"name": input, "datatype": "BYTES", "shape": [images.len()],
        "parameters": {"binary_data_size": blob.len()}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&blob);
    let r = server
        .client
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", header.len().to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_become_the_tensor_pil_and_numpy_make_over_every_api() {
    use base64::Engine as _;
    let fixture = image_cases();
    let repo = tempfile::tempdir().unwrap();
    for (name, config) in fixture["configs"].as_object().unwrap() {
        let model = fixture["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["config"] == *name)
            .unwrap()["model"]
            .as_str()
            .unwrap();
        install_model(
            repo.path(),
            name,
            1,
            &root_path(&format!("{IMAGES}/{model}.onnx")),
        );
        std::fs::write(
            repo.path().join(name).join("config.toml"),
            format!(
                "warmup = false\n[batching]\nenabled = true\nmax_batch_size = 8\nmax_queue_delay_micros = 2000\n{}",
                image_table(config)
            ),
        )
        .unwrap();
    }
    let server = TestServer::start(repo.path()).await;
    let read = |image: &str| std::fs::read(root_path(&format!("{IMAGES}/{image}"))).unwrap();

    let mut report = Vec::new();
    for (name, config) in fixture["configs"].as_object().unwrap() {
        let cases: Vec<&Value> = fixture["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["config"] == *name)
            .collect();
        let per_unit = levels_per_unit(config);
        let mut worst: f64 = 0.0;
        let mut compare = |what: &str, case: &Value, got: &[f64]| {
            let want = reference(case);
            assert_eq!(got.len(), want.len(), "{what}");
            let d = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs() * per_unit)
                .fold(0.0, f64::max);
            // Decoders (zune-jpeg vs libjpeg-turbo, image-webp vs libwebp) and the
            // resize's intermediate rounding (PIL keeps 8 bits between passes) may
            // differ by a few levels; PNG has no decoder difference.
            let bound = if case["image"].as_str().unwrap().ends_with(".png") {
                2.5
            } else {
                4.0
            };
            assert!(d <= bound, "{what}: {d} levels (bound {bound})");
            worst = worst.max(d);
        };

        // V2 REST, binary BYTES: each image alone, then all of them in one request.
        for case in &cases {
            let image = case["image"].as_str().unwrap();
            let (status, body) = v2_binary_images(&server, name, &[read(image)]).await;
            assert_eq!(status, 200, "{name} {image}: {body}");
            let out = &body["outputs"][0];
            let mut shape = vec![json!(1)];
            shape.extend(case["shape"].as_array().unwrap().iter().cloned());
            assert_eq!(out["shape"], Value::Array(shape), "{name} {image}");
            compare(&format!("v2 {name} {image}"), case, &numbers(&out["data"]));
        }
        let all: Vec<Vec<u8>> = cases
            .iter()
            .map(|c| read(c["image"].as_str().unwrap()))
            .collect();
        let (status, body) = v2_binary_images(&server, name, &all).await;
        assert_eq!(status, 200, "{name}: {body}");
        let got = numbers(&body["outputs"][0]["data"]);
        let per = got.len() / cases.len();
        for (i, case) in cases.iter().enumerate() {
            compare(
                &format!("v2 batch {name} {}", case["image"]),
                case,
                &got[i * per..(i + 1) * per],
            );
        }

        // TF Serving REST, {"b64": …} instances: one prediction per image.
        let instances: Vec<Value> = all
            .iter()
            .map(|b| json!({"b64": base64::engine::general_purpose::STANDARD.encode(b)}))
            .collect();
        let (status, body) = server
            .post_json(
                &format!("/v1/models/{name}:predict"),
                &json!({"instances": instances}),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        for (case, prediction) in cases.iter().zip(body["predictions"].as_array().unwrap()) {
            compare(
                &format!("tfs {name} {}", case["image"]),
                case,
                &numbers(prediction),
            );
        }

        // V2 gRPC: bytes_contents.
        let mut client = GrpcInferenceServiceClient::new(channel(&server).await);
        let answer = client
            .model_infer(v2::ModelInferRequest {
                model_name: name.clone(),
                inputs: vec![InferInputTensor {
                    name: "image".into(),
                    datatype: "BYTES".into(),
                    shape: vec![all.len() as i64],
                    contents: Some(InferTensorContents {
                        bytes_contents: all.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let out = &answer.outputs[0].contents.as_ref().unwrap();
        let got: Vec<f64> = if config["dtype"] == "uint8" {
            out.uint_contents.iter().map(|&v| f64::from(v)).collect()
        } else {
            out.fp32_contents.iter().map(|&v| f64::from(v)).collect()
        };
        for (i, case) in cases.iter().enumerate() {
            compare(
                &format!("grpc {name} {}", case["image"]),
                case,
                &got[i * per..(i + 1) * per],
            );
        }
        // The simple API: a multipart request with one image file (single values
        // back), then with every image (lists back).
        let part = |i: usize| {
            reqwest::multipart::Part::bytes(all[i].clone())
                .file_name(cases[i]["image"].as_str().unwrap().to_string())
        };
        let form = reqwest::multipart::Form::new()
            .text("model_id", name.clone())
            .part("image", part(0));
        let (status, body) = server.post_multipart("/predict", form).await;
        assert_eq!(status, 200, "{body}");
        compare(
            &format!("simple {name} {}", cases[0]["image"]),
            cases[0],
            &numbers(&body["prediction"]),
        );
        let mut form = reqwest::multipart::Form::new();
        for i in 0..cases.len() {
            form = form.part(format!("image{i}"), part(i));
        }
        let (status, body) = server
            .post_multipart(&format!("/predict/{name}"), form)
            .await;
        assert_eq!(status, 200, "{body}");
        let rows = body["prediction"].as_array().unwrap();
        assert_eq!(rows.len(), cases.len());
        for (case, row) in cases.iter().zip(rows) {
            compare(
                &format!("simple list {name} {}", case["image"]),
                case,
                &numbers(row),
            );
        }
        report.push(format!("{name}: {worst:.3} levels"));
    }
    eprintln!("largest difference from PIL + numpy, in 0-255 pixel levels: {report:?}");
    server.stop().await;
}

/// CRC-32 (IEEE), for a hand-made PNG chunk.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header declares `width` × `height` (valid signature and IHDR
/// checksum), followed by a tiny image body: a decompression bomb's header.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // One compressed zero byte: the start of an all-black image.
    let idat = b"IDAT\x78\x9c\x63\x00\x00\x00\x01\x00\x01";
    png.extend_from_slice(&9u32.to_be_bytes());
    png.extend_from_slice(idat);
    png.extend_from_slice(&crc32(idat).to_be_bytes());
    png.extend_from_slice(&0u32.to_be_bytes());
    png.extend_from_slice(b"IEND");
    png.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_and_misplaced_text_are_400s_with_clear_messages() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "img",
        1,
        &root_path(&format!("{IMAGES}/identity_nchw3.onnx")),
    );
    std::fs::write(
        repo.path().join("img/config.toml"),
        "warmup = false\n[preprocess]\nimage = { width = 32, height = 24, max_pixels = 4000 }\n",
    )
    .unwrap();
    install_model(
        repo.path(),
        "iris",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    // A limit of what one request may decode to: its rows.
    install_model(
        repo.path(),
        "img_rows",
        1,
        &root_path(&format!("{IMAGES}/identity_nchw3.onnx")),
    );
    std::fs::write(
        repo.path().join("img_rows/config.toml"),
        "warmup = false\nmax_request_rows = 2\n[preprocess]\nimage = { width = 32, height = 24 }\n",
    )
    .unwrap();
    // A model whose shape does not fit the image table fails its load.
    install_model(
        repo.path(),
        "wrong_shape",
        1,
        &root_path(&format!("{IMAGES}/identity_nchw1.onnx")),
    );
    std::fs::write(
        repo.path().join("wrong_shape/config.toml"),
        "[preprocess]\nimage = { width = 32, height = 24 }\n",
    )
    .unwrap();
    let server = TestServer::start(repo.path()).await;
    let photo = std::fs::read(root_path(&format!("{IMAGES}/photo.png"))).unwrap();
    let small = std::fs::read(root_path(&format!("{IMAGES}/gray.png"))).unwrap();
    // A JPEG under the model's max_pixels, cut: it was decoded with grey for what
    // is missing (a 200).
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
    })
    .write_to(&mut jpeg, image::ImageFormat::Jpeg)
    .unwrap();
    let jpeg = jpeg.into_inner();

    for (what, images, words) in [
        (
            "bytes that are not an image",
            vec![b"hello, world".to_vec()],
            "image 0: 12 bytes that are not a JPEG, PNG or WebP image",
        ),
        (
            "a truncated image",
            vec![small.clone(), small[..small.len() / 2].to_vec()],
            "image 1: cannot decode the image",
        ),
        (
            "a truncated JPEG",
            vec![jpeg.clone(), jpeg[..jpeg.len() * 9 / 10].to_vec()],
            "image 1: cannot decode the image: truncated",
        ),
        (
            "too many pixels",
            vec![photo.clone()],
            "97 x 61 = 5917 pixels, more than the 4000",
        ),
        (
            "a decompression bomb's header",
            vec![png_declaring(100_000, 100_000)],
            "100000 x 100000 = 10000000000 pixels",
        ),
    ] {
        let (status, body) = v2_binary_images(&server, "img", &images).await;
        assert_eq!(status, 400, "{what}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains(words), "{what}: {msg}");
        assert!(msg.contains("input \"image\""), "{what}: {msg}");
    }
    // The image model still answers a good image after those.
    let (status, body) = v2_binary_images(&server, "img", std::slice::from_ref(&small)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = v2_binary_images(&server, "img", std::slice::from_ref(&jpeg)).await;
    assert_eq!(status, 200, "{body}");

    // Past max_request_rows before any image is decoded (it was checked on the
    // decoded tensor: 120 tiny images to a 1024 x 1024 model took 1.5 GB first).
    // (Bytes that are no image: refused for their number, before any decoding.)
    let (status, body) =
        v2_binary_images(&server, "img_rows", &vec![b"no image".to_vec(); 3]).await;
    assert_eq!(status, 413, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("input \"image\" has 3 rows, more than the 2"),
        "{msg}"
    );
    let (status, body) = v2_binary_images(&server, "img_rows", &vec![small.clone(); 2]).await;
    assert_eq!(status, 200, "{body}");

    // A multipart request without a file, and a file that is not an image.
    let form = reqwest::multipart::Form::new().text("model_id", "img");
    let (status, body) = server.post_multipart("/predict", form).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("at least one file part"),
        "{body}"
    );
    let form = reqwest::multipart::Form::new()
        .text("model_id", "img")
        .part(
            "image",
            reqwest::multipart::Part::bytes(b"GIF89a not really".to_vec()).file_name("x.gif"),
        );
    let (status, body) = server.post_multipart("/predict", form).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a JPEG, PNG or WebP image"),
        "{body}"
    );

    // Text sent to a model that takes numbers and has no tokenizer or segmenter.
    let (status, body) = server
        .post_json(
            "/v2/models/iris/infer",
            &json!({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": ["a text"]}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("must be FP32, not BYTES"), "{msg}");

    let (status, body) = server.get("/v1/models/wrong_shape").await;
    assert_eq!(status, 200, "{body}");
    let v = &body["model_version_status"][0];
    assert_eq!(v["state"], "END", "{body}");
    let msg = v["status"]["error_message"].as_str().unwrap();
    assert!(
        msg.contains("preprocess.image makes [n, 3, 24, 32] tensors"),
        "{msg}"
    );
    server.stop().await;
}

const MINILM: &str = "tests/fixtures/preprocess/minilm";

fn install_text_model(repo: &std::path::Path, name: &str, onnx: &str, config: &str) {
    let dest = install_model(repo, name, 1, &root_path(&format!("{MINILM}/{onnx}")));
    std::fs::rename(&dest, dest.with_file_name("model.onnx")).unwrap();
    std::fs::copy(
        root_path(&format!("{MINILM}/tokenizer.json")),
        dest.with_file_name("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(repo.join(name).join("config.toml"), config).unwrap();
}

fn ints(v: &Value) -> Vec<i64> {
    numbers(v).into_iter().map(|x| x as i64).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_becomes_the_token_ids_and_embeddings_of_the_python_reference() {
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(root_path(&format!("{MINILM}/expected.json"))).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = exp["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let n = texts.len();
    let repo = tempfile::tempdir().unwrap();
    let tok = "warmup = false\n[preprocess]\ntokenizer = \"tokenizer.json\"\nmax_length = 32\n";
    install_text_model(repo.path(), "echo", "echo.onnx", tok);
    install_text_model(
        repo.path(),
        "echo_longest",
        "echo.onnx",
        &format!("{tok}padding = \"longest\"\n"),
    );
    install_text_model(
        repo.path(),
        "echo_strict",
        "echo.onnx",
        &format!("{tok}truncation = false\n"),
    );
    install_text_model(
        repo.path(),
        "embed",
        "model.onnx",
        &format!("{tok}[batching]\nenabled = true\n[postprocess]\npooling = \"mean\"\nnormalize = true\n"),
    );
    install_text_model(
        repo.path(),
        "embed_cls",
        "model.onnx",
        &format!("{tok}[postprocess]\npooling = \"cls\"\n"),
    );
    // Truncated to 2 tokens, a text has no room beside [CLS] and [SEP]: the version
    // fails its load saying so (the tokenizers crate panicked).
    install_text_model(
        repo.path(),
        "echo_too_short",
        "echo.onnx",
        "warmup = false\n[preprocess]\ntokenizer = \"tokenizer.json\"\nmax_length = 2\n",
    );
    // Nor without truncation: no text would fit (every one was refused at request).
    install_text_model(
        repo.path(),
        "echo_too_short_strict",
        "echo.onnx",
        "warmup = false\n[preprocess]\ntokenizer = \"tokenizer.json\"\nmax_length = 2\ntruncation = false\n",
    );
    // Labels for an output whose classes the model leaves open ([n, -1]): checked
    // answer by answer (a mismatch was answered with "" labels by one API and
    // class numbers by another).
    install_text_model(
        repo.path(),
        "echo_labelled",
        "echo.onnx",
        &format!("{tok}[postprocess]\noutput = \"input_ids_out\"\nlabels = \"labels.txt\"\n"),
    );
    std::fs::write(repo.path().join("echo_labelled/1/labels.txt"), "a\nb\n").unwrap();
    let server = TestServer::start(repo.path()).await;
    let (status, answer) = server
        .post_json(
            "/predict",
            &json!({"model_id": "echo_labelled", "text": "hello"}),
        )
        .await;
    assert_eq!(status, 500, "{answer}");
    let msg = answer["error"].as_str().unwrap();
    assert!(
        msg.contains("postprocess.labels has 2 labels but output \"input_ids_out\" has 32 classes"),
        "{msg}"
    );
    for model in ["echo_too_short", "echo_too_short_strict"] {
        let (status, body) = server.get(&format!("/v1/models/{model}")).await;
        assert_eq!(status, 200, "{body}");
        let msg = body["model_version_status"][0]["status"]["error_message"]
            .as_str()
            .unwrap();
        assert!(
            msg.contains("max_length is 2, but the tokenizer adds 2 special tokens"),
            "{model}: {msg}"
        );
    }
    let v2_texts = |texts: &[&str]| json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [texts.len()], "data": texts}]});
    let output = |body: &Value, name: &str| {
        body["outputs"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {body}"))
            .clone()
    };

    // Token ids, masks and type ids equal the Python tokenizers package's.
    let (status, body) = server
        .post_json("/v2/models/echo/infer", &v2_texts(&texts))
        .await;
    assert_eq!(status, 200, "{body}");
    for name in ["input_ids", "attention_mask", "token_type_ids"] {
        let out = output(&body, &format!("{name}_out"));
        assert_eq!(out["shape"], json!([n, 32]), "{name}");
        assert_eq!(ints(&out["data"]), ints(&exp[name]), "{name}");
    }
    let (status, body) = server
        .post_json("/v2/models/echo_longest/infer", &v2_texts(&texts))
        .await;
    assert_eq!(status, 200, "{body}");
    for name in ["input_ids", "attention_mask"] {
        assert_eq!(
            ints(&output(&body, &format!("{name}_out"))["data"]),
            ints(&exp["longest"][name]),
            "longest {name}"
        );
    }
    // Without truncation a text over max_length is refused; the others pass.
    let (status, body) = server
        .post_json("/v2/models/echo_strict/infer", &v2_texts(&texts))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("text 5 has"),
        "{body}"
    );
    // TF Serving rows name no input: the error names the text input (it said
    // `input ""`).
    let (status, body) = server
        .post_json(
            "/v1/models/echo:predict",
            &json!({"instances": [["a", "b"]]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("input \"text\" takes one text per row"),
        "{body}"
    );

    // Embeddings: mean pooling + L2 normalization (V2 REST, TF Serving REST, the
    // simple API), and the first token.
    let close = |what: &str, got: &[f64], want: &[f64]| {
        assert_eq!(got.len(), want.len(), "{what}");
        let d = got
            .iter()
            .zip(want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max);
        assert!(d <= 1e-4, "{what}: {d}");
    };
    let mean = numbers(&exp["mean_normalized"]);
    let (status, body) = server
        .post_json("/v2/models/embed/infer", &v2_texts(&texts))
        .await;
    assert_eq!(status, 200, "{body}");
    let out = output(&body, "last_hidden_state");
    assert_eq!(out["shape"], json!([n, 16]));
    close("v2 mean", &numbers(&out["data"]), &mean);
    let (status, body) = server
        .post_json("/v1/models/embed:predict", &json!({"instances": texts}))
        .await;
    assert_eq!(status, 200, "{body}");
    close("tfs mean", &numbers(&body["predictions"]), &mean);
    let (status, body) = server
        .post_json("/predict", &json!({"model_id": "embed", "texts": texts}))
        .await;
    assert_eq!(status, 200, "{body}");
    close("simple mean", &numbers(&body["prediction"]), &mean);
    let (status, body) = server
        .post_json("/predict", &json!({"model_id": "embed", "text": texts[0]}))
        .await;
    assert_eq!(status, 200, "{body}");
    close("simple one", &numbers(&body["prediction"]), &mean[..16]);
    let (status, body) = server
        .post_json("/v2/models/embed_cls/infer", &v2_texts(&texts))
        .await;
    assert_eq!(status, 200, "{body}");
    close(
        "v2 cls",
        &numbers(&output(&body, "last_hidden_state")["data"]),
        &numbers(&exp["cls"]),
    );

    // Bad text: empty, not UTF-8 (binary BYTES), and text to a model without a
    // tokenizer or segmenter.
    let (status, body) = server
        .post_json("/v2/models/embed/infer", &v2_texts(&["fine", "  "]))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("text 1 is empty"),
        "{body}"
    );
    let mut blob = Vec::new();
    for t in [&b"ok"[..], &b"\xff\xfe bad"[..]] {
        blob.extend_from_slice(&(t.len() as u32).to_le_bytes());
        blob.extend_from_slice(t);
    }
    let header = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
        "parameters": {"binary_data_size": blob.len()}}]})
    .to_string();
    let mut raw = header.clone().into_bytes();
    raw.extend_from_slice(&blob);
    let r = server
        .client
        .post(server.url("/v2/models/embed/infer"))
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", header.len().to_string())
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("text 1 is not UTF-8"),
        "{body}"
    );
    server.stop().await;
}

/// `(label, score)` pairs of a simple answer's `top_classes` row.
fn top_classes_row(row: &Value) -> Vec<(String, f64)> {
    row.as_array()
        .unwrap_or_else(|| panic!("{row}"))
        .iter()
        .map(|c| {
            (
                c["label"].as_str().unwrap().to_string(),
                c["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The k best of a softmax row with the fixture's labels, best first.
fn best_classes(softmax: &Value, labels: &[String], k: usize) -> Vec<(String, f64)> {
    let mut row: Vec<(String, f64)> = labels.iter().cloned().zip(numbers(softmax)).collect();
    row.sort_by(|a, b| b.1.total_cmp(&a.1));
    row.truncate(k);
    row
}

fn assert_classes(got: &[(String, f64)], want: &[(String, f64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.0, w.0, "{what}: {got:?} vs {want:?}");
        assert!((g.1 - w.1).abs() <= 1e-6, "{what}: {got:?} vs {want:?}");
    }
}

/// The simple API answers a labelled model's top-k classes with their (softmaxed)
/// scores as `top_classes`: k from the request's `top_k`, else the config's, else
/// every class; a bad `top_k`, or one sent to a model without labels, is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_api_answers_the_top_k_labels_with_scores() {
    let exp = expected();
    let rows = rows(&exp);
    let labels: Vec<String> = std::fs::read_to_string(root_path(&format!("{LOGITS}/labels.txt")))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let softmax = exp["softmax"].as_array().unwrap();
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "labelled", LABELLED, None);
    install(
        repo.path(),
        "every_class",
        "[postprocess]\nlabels = \"labels.txt\"\nsoftmax = true\n",
        None,
    );
    install(repo.path(), "raw", "", None);
    let server = TestServer::start(repo.path()).await;

    // One row: single values; the config's top_k (2).
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "labelled", "features": rows[0]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_classes(
        &top_classes_row(&body["top_classes"]),
        &best_classes(&softmax[0], &labels, 2),
        "config top_k",
    );
    // The prediction is still the scores.
    assert_eq!(numbers(&body["prediction"]).len(), 4, "{body}");

    // The request's top_k wins, over every row; by name and in the path too.
    for k in 1..=4 {
        let (status, body) = server
            .post_json("/predict/labelled", &json!({"features": rows, "top_k": k}))
            .await;
        assert_eq!(status, 200, "{body}");
        let got = body["top_classes"].as_array().unwrap();
        assert_eq!(got.len(), rows.len(), "{body}");
        for (i, row) in got.iter().enumerate() {
            assert_classes(
                &top_classes_row(row),
                &best_classes(&softmax[i], &labels, k),
                &format!("k={k} row {i}"),
            );
        }
    }
    let named: Value = FEATURES
        .iter()
        .zip(&rows[1])
        .map(|(f, v)| (f.to_string(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "labelled", "features": named, "top_k": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_classes(
        &top_classes_row(&body["top_classes"]),
        &best_classes(&softmax[1], &labels, 3),
        "named features",
    );

    // No top_k anywhere: every class, best first.
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "every_class", "features": rows[2]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_classes(
        &top_classes_row(&body["top_classes"]),
        &best_classes(&softmax[2], &labels, 4),
        "every class",
    );
    // More than the model has: every class.
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "labelled", "features": rows[2], "top_k": 9}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["top_classes"].as_array().unwrap().len(), 4, "{body}");

    // Without labels: no top_classes, and asking for them is a 400.
    let (status, body) = server
        .post_json("/predict", &json!({"model_id": "raw", "features": rows[0]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("top_classes").is_none(), "{body}");
    let (status, body) = server
        .post_json(
            "/predict",
            &json!({"model_id": "raw", "features": rows[0], "top_k": 2}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("top_k") && msg.contains("[postprocess] labels"),
        "{msg}"
    );
    for bad in [json!(0), json!(-1), json!(1.5), json!("two")] {
        let (status, body) = server
            .post_json(
                "/predict",
                &json!({"model_id": "labelled", "features": rows[0], "top_k": bad}),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].as_str().unwrap().contains("top_k"), "{body}");
    }
    server.stop().await;
}

/// A model's inputs and outputs in metadata, as `(name, datatype, shape)`.
type Specs = Vec<(String, String, Vec<i64>)>;

fn v2_specs(list: &Value) -> Specs {
    list.as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["datatype"].as_str().unwrap().to_string(),
                ints(&s["shape"]),
            )
        })
        .collect()
}

fn spec(name: &str, datatype: &str, shape: &[i64]) -> (String, String, Vec<i64>) {
    (name.to_string(), datatype.to_string(), shape.to_vec())
}

/// TF Serving REST's signature inputs or outputs (a map by key), sorted by name,
/// with the dtype written as V2 writes it.
fn tfs_rest_specs(map: &Value) -> Specs {
    let mut specs: Specs = map
        .as_object()
        .unwrap_or_else(|| panic!("{map}"))
        .iter()
        .map(|(name, info)| {
            let dims = info["tensor_shape"]["dim"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["size"].as_str().unwrap().parse::<i64>().unwrap())
                .collect();
            (
                name.clone(),
                tf_to_v2(info["dtype"].as_str().unwrap()),
                dims,
            )
        })
        .collect();
    specs.sort();
    specs
}

fn tf_to_v2(dtype: &str) -> String {
    match dtype {
        "DT_STRING" => "BYTES",
        "DT_FLOAT" => "FP32",
        "DT_INT64" => "INT64",
        other => panic!("unexpected dtype {other}"),
    }
    .to_string()
}

fn tfs_grpc_specs(map: &std::collections::HashMap<String, tf::TensorInfo>) -> Specs {
    let mut specs: Specs = map
        .iter()
        .map(|(name, info)| {
            let dtype = match tf::DataType::try_from(info.dtype).unwrap() {
                tf::DataType::DtString => "DT_STRING",
                tf::DataType::DtFloat => "DT_FLOAT",
                tf::DataType::DtInt64 => "DT_INT64",
                other => panic!("unexpected dtype {other:?}"),
            };
            let dims = info
                .tensor_shape
                .as_ref()
                .unwrap()
                .dim
                .iter()
                .map(|d| d.size)
                .collect();
            (name.clone(), tf_to_v2(dtype), dims)
        })
        .collect();
    specs.sort();
    specs
}

/// Metadata describes the request a client sends once the pipeline stands in
/// front of the model, over V2 REST and gRPC and TF Serving REST and gRPC: an
/// image model takes encoded images (BYTES / DT_STRING), a model with a tokenizer
/// one text input instead of input_ids, attention_mask and token_type_ids, pooled
/// embeddings are `[n, dim]`; a labelled classifier still answers its scores; a
/// model without a pipeline lists its graph's tensors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_describes_what_the_client_sends_over_every_api() {
    use ferroserve_proto::prost::Message as _;
    let fixture = image_cases();
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "image",
        1,
        &root_path(&format!("{IMAGES}/identity_nchw3.onnx")),
    );
    std::fs::write(
        repo.path().join("image/config.toml"),
        format!(
            "warmup = false\n{}",
            image_table(&fixture["configs"]["imagenet"])
        ),
    )
    .unwrap();
    install_model(
        repo.path(),
        "graph",
        1,
        &root_path(&format!("{IMAGES}/identity_nchw3.onnx")),
    );
    install_text_model(
        repo.path(),
        "embed",
        "model.onnx",
        "warmup = false\n[preprocess]\ntokenizer = \"tokenizer.json\"\n\
         [postprocess]\npooling = \"mean\"\nnormalize = true\n",
    );
    install_text_model(
        repo.path(),
        "echo",
        "echo.onnx",
        "warmup = false\n[preprocess]\ntokenizer = \"tokenizer.json\"\n",
    );
    install(repo.path(), "labelled", LABELLED, None);
    let server = TestServer::start(repo.path()).await;

    let bytes_in = |name: &str| vec![spec(name, "BYTES", &[-1])];
    let mut echo_outputs = vec![
        spec("attention_mask_out", "INT64", &[-1, -1]),
        spec("input_ids_out", "INT64", &[-1, -1]),
        spec("token_type_ids_out", "INT64", &[-1, -1]),
    ];
    echo_outputs.sort();
    let cases: Vec<(&str, Specs, Specs)> = vec![
        (
            "image",
            bytes_in("image"),
            vec![spec("pixels", "FP32", &[-1, 3, 24, 32])],
        ),
        (
            "graph",
            vec![spec("image", "FP32", &[-1, 3, 24, 32])],
            vec![spec("pixels", "FP32", &[-1, 3, 24, 32])],
        ),
        (
            "embed",
            bytes_in("text"),
            vec![spec("last_hidden_state", "FP32", &[-1, 16])],
        ),
        ("echo", bytes_in("text"), echo_outputs),
        (
            "labelled",
            vec![spec("input", "FP32", &[-1, 4])],
            vec![spec("logits", "FP32", &[-1, 4])],
        ),
    ];
    let sorted = |mut s: Specs| {
        s.sort();
        s
    };
    let mut v2_client = GrpcInferenceServiceClient::new(channel(&server).await);
    let mut tfs_client = PredictionServiceClient::new(channel(&server).await);
    for (model, inputs, outputs) in &cases {
        // V2 REST.
        let (status, body) = server.get(&format!("/v2/models/{model}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            &sorted(v2_specs(&body["inputs"])),
            inputs,
            "{model}: {body}"
        );
        assert_eq!(
            &sorted(v2_specs(&body["outputs"])),
            outputs,
            "{model}: {body}"
        );

        // V2 gRPC.
        let meta = v2_client
            .model_metadata(v2::ModelMetadataRequest {
                name: model.to_string(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let grpc = |list: &[v2::model_metadata_response::TensorMetadata]| {
            sorted(
                list.iter()
                    .map(|t| (t.name.clone(), t.datatype.clone(), t.shape.clone()))
                    .collect(),
            )
        };
        assert_eq!(&grpc(&meta.inputs), inputs, "{model}: {meta:?}");
        assert_eq!(&grpc(&meta.outputs), outputs, "{model}: {meta:?}");

        // TF Serving REST.
        let (status, body) = server.get(&format!("/v1/models/{model}/metadata")).await;
        assert_eq!(status, 200, "{body}");
        let def = &body["metadata"]["signature_def"]["signature_def"]["serving_default"];
        assert_eq!(&tfs_rest_specs(&def["inputs"]), inputs, "{model}: {body}");
        assert_eq!(&tfs_rest_specs(&def["outputs"]), outputs, "{model}: {body}");

        // TF Serving gRPC.
        let meta = tfs_client
            .get_model_metadata(tfs::GetModelMetadataRequest {
                model_spec: Some(ModelSpec {
                    name: model.to_string(),
                    ..Default::default()
                }),
                metadata_field: vec!["signature_def".into()],
            })
            .await
            .unwrap()
            .into_inner();
        let map = tfs::SignatureDefMap::decode(&*meta.metadata["signature_def"].value).unwrap();
        let def = &map.signature_def["serving_default"];
        assert_eq!(&tfs_grpc_specs(&def.inputs), inputs, "{model}");
        assert_eq!(&tfs_grpc_specs(&def.outputs), outputs, "{model}");
    }

    // What metadata says is what the model takes: the image input takes an encoded
    // image, the text input a text.
    let photo = std::fs::read(root_path(&format!("{IMAGES}/photo.png"))).unwrap();
    let (status, body) = v2_binary_images(&server, "image", &[photo]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([1, 3, 24, 32]), "{body}");
    let (status, body) = server
        .post_json(
            "/v2/models/embed/infer",
            &json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([1, 16]), "{body}");
    server.stop().await;
}

const PPOCR: &str = "tests/fixtures/preprocess/ppocr_cls";

/// The PP-OCR direction classifier served with `resize = "fit_height"` (rapidocr's
/// text-line preprocessing: height 48, width in proportion up to 192, zeros on the
/// right) gives, for real text lines upright and turned 180 degrees, the class
/// rapidocr's own pipeline gives, with its scores (python/make_ppocr_cls_fixture.py).
/// Two of the lines are words whose direction the model is unsure of: centring
/// them, or padding with black, would change the class or the scores by far more
/// than the tolerance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ppocr_direction_classifier_answers_as_rapidocr() {
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(root_path(&format!("{PPOCR}/expected.json"))).unwrap(),
    )
    .unwrap();
    let repo = tempfile::tempdir().unwrap();
    let dest = install_model(
        repo.path(),
        "ppocr_cls",
        1,
        &root_path(&format!("{PPOCR}/model.onnx")),
    );
    std::fs::copy(
        root_path(&format!("{PPOCR}/labels.txt")),
        dest.with_file_name("labels.txt"),
    )
    .unwrap();
    std::fs::write(
        repo.path().join("ppocr_cls/config.toml"),
        "warmup = false\n[preprocess]\nimage = { width = 192, height = 48, resize = \"fit_height\", \
         channels = \"bgr\", mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }\n\
         [postprocess]\nlabels = \"labels.txt\"\n",
    )
    .unwrap();
    let server = TestServer::start(repo.path()).await;
    let cases = exp["images"].as_array().unwrap();
    let images: Vec<Vec<u8>> = cases
        .iter()
        .map(|c| {
            std::fs::read(root_path(&format!(
                "{PPOCR}/{}",
                c["image"].as_str().unwrap()
            )))
            .unwrap()
        })
        .collect();
    assert!(cases.iter().any(|c| c["label"] == "180") && cases.iter().any(|c| c["label"] == "0"));

    // The probabilities, all images in one request.
    let (status, body) = v2_binary_images_to(&server, "ppocr_cls", "x", &images).await;
    assert_eq!(status, 200, "{body}");
    let probs = numbers(&body["outputs"][0]["data"]);
    assert_eq!(probs.len(), 2 * cases.len(), "{body}");
    let mut largest = 0.0f64;
    for (case, got) in cases.iter().zip(probs.chunks(2)) {
        let want = numbers(&case["probabilities"]);
        for (g, w) in got.iter().zip(&want) {
            largest = largest.max((g - w).abs());
            assert!(
                (g - w).abs() <= 1e-4,
                "{}: {got:?} vs {want:?}",
                case["image"]
            );
        }
    }
    eprintln!("PP-OCR cls: largest probability difference from rapidocr {largest:e}");

    // The class and its score, one image per request, as the classification
    // extension answers them ("score:index:label").
    for (case, image) in cases.iter().zip(&images) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(image);
        let (status, body) = server
            .post_json(
                "/v2/models/ppocr_cls/infer",
                &json!({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [{"b64": b64}]}],
                        "outputs": [{"name": "save_infer_model/scale_0.tmp_1", "parameters": {"classification": 1}}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let got = strings(&body["outputs"][0]["data"]);
        let parts: Vec<&str> = got[0].split(':').collect();
        assert_eq!(
            parts[2],
            case["label"].as_str().unwrap(),
            "{}: {got:?}",
            case["image"]
        );
        let score: f64 = parts[0].parse().unwrap();
        assert!(
            (score - case["score"].as_f64().unwrap()).abs() <= 1e-4,
            "{}: {got:?} vs {}",
            case["image"],
            case["score"]
        );
    }

    // The simple API: one multipart request with every image, top_k 1: each
    // image's class and score.
    let mut form = reqwest::multipart::Form::new().text("top_k", "1");
    for (i, (case, image)) in cases.iter().zip(&images).enumerate() {
        form = form.part(
            format!("image{i}"),
            reqwest::multipart::Part::bytes(image.clone())
                .file_name(case["image"].as_str().unwrap().to_string()),
        );
    }
    let (status, body) = server.post_multipart("/predict/ppocr_cls", form).await;
    assert_eq!(status, 200, "{body}");
    let rows = body["top_classes"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(rows.len(), cases.len(), "{body}");
    for (case, row) in cases.iter().zip(rows) {
        let got = top_classes_row(row);
        assert_eq!(got.len(), 1, "{body}");
        assert_eq!(
            got[0].0,
            case["label"].as_str().unwrap(),
            "{}: {body}",
            case["image"]
        );
        assert!(
            (got[0].1 - case["score"].as_f64().unwrap()).abs() <= 1e-4,
            "{body}"
        );
    }
    server.stop().await;
}

/// A file of an upload: its name and bytes.
type UploadFile<'a> = (&'a str, Vec<u8>);

/// `POST /upload_model` with the model `file` and `asset` files after it.
async fn upload_with_assets(
    server: &TestServer,
    model: &str,
    file: (&str, Vec<u8>),
    assets: &[(&str, Vec<u8>)],
) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new().text("model_id", model.to_string());
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(file.1).file_name(file.0.to_string()),
    );
    for (name, bytes) in assets {
        form = form.part(
            "asset",
            reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.to_string()),
        );
    }
    server.post_multipart("/upload_model", form).await
}

/// The versions of a model on disk, ascending.
fn versions_on_disk(repo: &std::path::Path, model: &str) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(repo.join(model))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    v.sort_unstable();
    v
}

/// An upload is checked by building the version's pipeline from its config.toml
/// and the files sent with it (`asset` parts): a labels file, tokenizer or image
/// setting that does not fit the model is a 400 naming the problem, and nothing
/// is stored (the version served before keeps serving, its files untouched); a
/// fitting one serves at once with its labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_whose_pipeline_does_not_fit_are_refused_and_change_nothing() {
    let repo = tempfile::tempdir().unwrap();
    let read = |path: &str| std::fs::read(root_path(path)).unwrap();
    let logits = read(&format!("{LOGITS}/model.onnx"));
    let labels = read(&format!("{LOGITS}/labels.txt"));
    for (model, config) in [
        ("labelled", LABELLED.to_string()),
        (
            "text",
            "[preprocess]\ntokenizer = \"tokenizer.json\"\n".to_string(),
        ),
        (
            "image",
            "[preprocess]\nimage = { width = 64, height = 24 }\n".to_string(),
        ),
    ] {
        std::fs::create_dir_all(repo.path().join(model)).unwrap();
        std::fs::write(repo.path().join(model).join("config.toml"), config).unwrap();
    }
    let server = TestServer::start(repo.path()).await;

    // A fitting upload: the model with its labels file serves at once, labelled.
    let (status, body) = upload_with_assets(
        &server,
        "labelled",
        ("logits.onnx", logits.clone()),
        &[("labels.txt", labels.clone())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1, "{body}");
    let stored = repo.path().join("labelled/1");
    assert_eq!(std::fs::read(stored.join("labels.txt")).unwrap(), labels);
    assert!(stored.join("model.onnx").exists());
    let row = rows(&expected())[0].clone();
    let (status, answer) = server
        .post_json(
            "/predict",
            &json!({"model_id": "labelled", "features": row}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 1);
    assert_eq!(
        answer["top_classes"].as_array().unwrap().len(),
        2,
        "{answer}"
    );

    // Uploads that do not fit, each refused with the setting and the problem.
    let cases: Vec<(&str, UploadFile, Vec<UploadFile>, &[&str])> = vec![
        (
            "labelled",
            ("logits.onnx", logits.clone()),
            vec![("labels.txt", b"cat\ndog\nbird\n".to_vec())],
            &[
                "postprocess.labels",
                "has 3 labels but output \"logits\" has 4 classes",
            ],
        ),
        (
            "labelled",
            ("logits.onnx", logits.clone()),
            vec![],
            &["postprocess.labels", "cannot read labels.txt"],
        ),
        (
            "labelled",
            ("logits.onnx", logits.clone()),
            vec![("labels.txt", vec![0xff, 0xfe, b'\n'])],
            &["postprocess.labels", "not UTF-8"],
        ),
        (
            "text",
            ("model.onnx", read(&format!("{MINILM}/model.onnx"))),
            vec![("tokenizer.json", b"{\"not\": \"a tokenizer\"}".to_vec())],
            &["preprocess.tokenizer", "is not a tokenizer.json"],
        ),
        (
            "text",
            ("logits.onnx", logits.clone()),
            vec![("tokenizer.json", read(&format!("{MINILM}/tokenizer.json")))],
            &["preprocess.tokenizer", "no input \"input_ids\""],
        ),
        (
            "image",
            (
                "identity.onnx",
                read(&format!("{IMAGES}/identity_nchw3.onnx")),
            ),
            vec![],
            &["preprocess.image", "[n, 3, 24, 64]", "[-1, 3, 24, 32]"],
        ),
    ];
    for (model, file, assets, words) in cases {
        let before = versions_on_disk(repo.path(), model);
        let (status, body) = upload_with_assets(&server, model, file, &assets).await;
        assert_eq!(status, 400, "{model}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains("config.toml"), "{model}: {msg}");
        for w in words {
            assert!(msg.contains(w), "{model}: {w:?} not in {msg}");
        }
        assert!(!msg.contains(repo.path().to_str().unwrap()), "{msg}");
        assert_eq!(versions_on_disk(repo.path(), model), before, "{model}");
    }
    // Nothing staged is left behind, and the stored version still serves with its
    // own labels.
    let leftovers: Vec<_> = std::fs::read_dir(repo.path().join("labelled"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(std::fs::read(stored.join("labels.txt")).unwrap(), labels);
    let (status, answer) = server
        .post_json(
            "/predict",
            &json!({"model_id": "labelled", "features": row}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 1);
    let (_, status_body) = server.get("/v1/models/labelled").await;
    let states: Vec<&Value> = status_body["model_version_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["state"])
        .collect();
    assert_eq!(states, [&json!("AVAILABLE")], "{status_body}");

    // Asset names the version directory cannot hold: a file the repository
    // would load instead of the model, a warm-up that fails (both once stored
    // with a 200, the version in ERROR).
    for (name, words) in [
        ("config.toml", "config.toml"),
        (".hidden", "does not start with '.'"),
        ("labels.txt", "name of another file"),
        ("saved_model.pb", "would be taken for the version's model"),
        ("warmup.json", "warm-up failed: warmup.json"),
        // It marks a model training may replace.
        ("training.json", "only a training job writes it"),
    ] {
        let mut assets = vec![(name, b"x\n".to_vec())];
        if name == "labels.txt" || name == "warmup.json" {
            assets.push(("labels.txt", labels.clone()));
        }
        let (status, body) = upload_with_assets(
            &server,
            "labelled",
            ("logits.onnx", logits.clone()),
            &assets,
        )
        .await;
        assert_eq!(status, 400, "{name}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(words),
            "{name}: {body}"
        );
    }
    assert_eq!(versions_on_disk(repo.path(), "labelled"), [1]);

    // The model's config.toml broken meanwhile: an upload is checked against
    // nothing, so it is refused (409) and nothing stored (it was checked against
    // the defaults and stored without its labels: a version that failed once the
    // file was fixed).
    let config = repo.path().join("labelled/config.toml");
    let good = std::fs::read(&config).unwrap();
    std::fs::write(&config, "[postprocess\nlabels = \"labels.txt\"\n").unwrap();
    let (status, body) =
        upload_with_assets(&server, "labelled", ("logits.onnx", logits.clone()), &[]).await;
    assert_eq!(status, 409, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("config.toml is not a valid model config"),
        "{msg}"
    );
    assert!(!msg.contains(repo.path().to_str().unwrap()), "{msg}");
    assert_eq!(versions_on_disk(repo.path(), "labelled"), [1]);
    std::fs::write(&config, good).unwrap();
    server.stop().await;
}
