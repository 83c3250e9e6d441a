//! Issue 12, the response cache: per-model `[cache]` in config.toml, an in-process
//! tier and a Redis tier (a real `redis-server`, started per test). Black-box over
//! real sockets: REST (TF Serving, KServe V2, simple API) and gRPC (TF Serving,
//! KServe V2).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::{install_model, metric_value, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use ferroserve::tensor::{DataType, Tensor, TensorData};
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::model_infer_request::InferInputTensor;
use ferroserve_proto::inference::{self as v2};
use ferroserve_proto::prost::Message;
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec};
use ferroserve_proto::tensorflow::{
    tensor_shape_proto, DataType as Dt, TensorProto, TensorShapeProto,
};
use serde_json::{json, Value};

const IRIS_LR: &str = "examples/models/iris_lr/1/model.onnx";
const IRIS_DT: &str = "examples/models/iris_dt/1/model.onnx";
const ROW: [f32; 4] = [5.1, 3.5, 1.4, 0.2];
const CACHE_ON: &str = "[cache]\nenabled = true\n";
const FEATURES: &str =
    "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n";

/// One REST answer: status, the `x-ferroserve-cache` header, the body's bytes.
#[derive(Debug)]
struct Answer {
    status: u16,
    cache: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn post(server: &TestServer, path: &str, body: &Value) -> Answer {
    let r = server
        .client
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    answer(r).await
}

async fn get(server: &TestServer, path: &str) -> Answer {
    answer(server.client.get(server.url(path)).send().await.unwrap()).await
}

async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-ferroserve-cache")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.bytes().await.unwrap().to_vec();
    Answer {
        status,
        cache,
        body,
    }
}

fn tfs_body(row: [f32; 4]) -> Value {
    json!({ "instances": [row] })
}

fn v2_body(row: [f32; 4]) -> Value {
    json!({ "id": "r1", "inputs": [{ "name": "input", "shape": [1, 4], "datatype": "FP32", "data": row }] })
}

async fn tfs_predict(server: &TestServer, model: &str, row: [f32; 4]) -> Answer {
    post(
        server,
        &format!("/v1/models/{model}:predict"),
        &tfs_body(row),
    )
    .await
}

async fn v2_infer(server: &TestServer, model: &str, row: [f32; 4]) -> Answer {
    post(server, &format!("/v2/models/{model}/infer"), &v2_body(row)).await
}

fn write_config(repo: &Path, model: &str, text: &str) {
    std::fs::write(repo.join(model).join("config.toml"), text).unwrap();
}

fn settings(repo: &Path) -> Settings {
    Settings {
        file_system_poll_wait: Duration::from_millis(100),
        ..test_settings(repo)
    }
}

/// The sum of the samples of metric `name` whose labels include all of `labels`.
async fn metric(server: &TestServer, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_value(&text, name, labels)
}

/// Model runs of `model` version `version`: each run records one batch size.
async fn model_runs(server: &TestServer, model: &str, version: u64) -> f64 {
    metric(
        server,
        "ferroserve_batch_size_count",
        &[("model", model), ("version", &version.to_string())],
    )
    .await
}

async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tf_row(row: [f32; 4]) -> TensorProto {
    TensorProto {
        dtype: Dt::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: [1, 4]
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        float_val: row.to_vec(),
        ..Default::default()
    }
}

fn tf_predict_request(model: &str, row: [f32; 4]) -> tfs::PredictRequest {
    tfs::PredictRequest {
        model_spec: Some(ModelSpec {
            name: model.into(),
            ..Default::default()
        }),
        inputs: [("input".to_string(), tf_row(row))].into(),
        ..Default::default()
    }
}

fn v2_raw_request(model: &str, row: [f32; 4]) -> v2::ModelInferRequest {
    v2::ModelInferRequest {
        model_name: model.into(),
        id: "g1".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![row.iter().flat_map(|x| x.to_le_bytes()).collect()],
        ..Default::default()
    }
}

fn grpc_cache<T>(r: &tonic::Response<T>) -> Option<String> {
    r.metadata()
        .get("x-ferroserve-cache")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_equals_the_miss_bit_for_bit_on_every_protocol_and_skips_the_backend() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "hit_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "hit_lr", &format!("{FEATURES}{CACHE_ON}"));
    let server = TestServer::start_with(settings(repo.path())).await;

    // TF Serving REST.
    let miss = tfs_predict(&server, "hit_lr", ROW).await;
    assert_eq!(
        (miss.status, miss.cache.as_deref()),
        (200, Some("miss")),
        "{miss:?}"
    );
    let runs = model_runs(&server, "hit_lr", 1).await;
    let hit = tfs_predict(&server, "hit_lr", ROW).await;
    assert_eq!((hit.status, hit.cache.as_deref()), (200, Some("hit")));
    assert_eq!(hit.body, miss.body, "a hit is the miss, bit for bit");
    assert_eq!(
        model_runs(&server, "hit_lr", 1).await,
        runs,
        "a hit skips the backend"
    );

    // KServe V2 REST, JSON and binary outputs; the answer (the tensors) is shared with
    // the request above, as the model's inputs and outputs are the same.
    let other = [6.0, 2.9, 4.5, 1.5];
    let miss = v2_infer(&server, "hit_lr", other).await;
    assert_eq!(miss.cache.as_deref(), Some("miss"));
    let hit = v2_infer(&server, "hit_lr", other).await;
    assert_eq!(hit.cache.as_deref(), Some("hit"));
    assert_eq!(hit.body, miss.body);
    let mut binary = v2_body(other);
    binary["parameters"] = json!({ "binary_data_output": true });
    let binary_hit = post(&server, "/v2/models/hit_lr/infer", &binary).await;
    assert_eq!(
        binary_hit.cache.as_deref(),
        Some("hit"),
        "binary outputs encode the same tensors"
    );
    assert!(binary_hit.body.len() > 10 && binary_hit.body != hit.body);

    // Only some outputs: another entry. Every output in another order than the
    // model's: another entry too; in the model's order, the entry of naming none
    // (the request above), answered in the order asked.
    let mut one = v2_body(other);
    one["outputs"] = json!([{ "name": "probabilities" }]);
    assert_eq!(
        post(&server, "/v2/models/hit_lr/infer", &one)
            .await
            .cache
            .as_deref(),
        Some("miss")
    );
    let mut both = v2_body(other);
    both["outputs"] = json!([{ "name": "probabilities" }, { "name": "label" }]);
    let first = post(&server, "/v2/models/hit_lr/infer", &both).await;
    both["outputs"] = json!([{ "name": "label" }, { "name": "probabilities" }]);
    let swapped = post(&server, "/v2/models/hit_lr/infer", &both).await;
    assert_eq!(
        (first.cache.as_deref(), swapped.cache.as_deref()),
        (Some("miss"), Some("hit"))
    );
    let names = |a: &Answer| -> Vec<String> {
        a.json()["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&swapped),
        ["label", "probabilities"],
        "in the order asked"
    );

    // The simple API and TF Serving :classify ride on the same entries.
    let query = "/predict/hit_lr?sepal_length=7.7&sepal_width=2.6&petal_length=6.9&petal_width=2.3";
    let miss = get(&server, query).await;
    let hit = get(&server, query).await;
    assert_eq!(
        (miss.status, miss.cache.as_deref(), hit.cache.as_deref()),
        (200, Some("miss"), Some("hit")),
        "{miss:?}"
    );
    for field in ["prediction", "probabilities", "classes"] {
        assert_eq!(miss.json()[field], hit.json()[field], "{field}");
    }
    let classify = json!({ "examples": [{
        "sepal_length": 4.9, "sepal_width": 3.0, "petal_length": 1.4, "petal_width": 0.2
    }] });
    let miss = post(&server, "/v1/models/hit_lr:classify", &classify).await;
    let hit = post(&server, "/v1/models/hit_lr:classify", &classify).await;
    assert_eq!(
        (miss.status, miss.cache.as_deref(), hit.cache.as_deref()),
        (200, Some("miss"), Some("hit")),
        "{miss:?}"
    );
    assert_eq!(hit.body, miss.body);

    // gRPC: an entry made over REST answers gRPC (the tensors are re-encoded), and a
    // gRPC miss and hit encode to the same bytes.
    let mut client = PredictionServiceClient::new(server.grpc_channel().await);
    let shared = client
        .predict(tf_predict_request("hit_lr", ROW))
        .await
        .unwrap();
    assert_eq!(grpc_cache(&shared).as_deref(), Some("hit"), "REST's entry");
    let fresh = [5.9, 3.0, 5.1, 1.8];
    let miss = client
        .predict(tf_predict_request("hit_lr", fresh))
        .await
        .unwrap();
    let runs = model_runs(&server, "hit_lr", 1).await;
    let hit = client
        .predict(tf_predict_request("hit_lr", fresh))
        .await
        .unwrap();
    assert_eq!(
        (grpc_cache(&miss).as_deref(), grpc_cache(&hit).as_deref()),
        (Some("miss"), Some("hit"))
    );
    // The outputs are a protobuf map, which prost writes in hash order: compare
    // each output tensor's bytes.
    let (hit, miss) = (hit.into_inner(), miss.into_inner());
    assert_eq!(hit.model_spec, miss.model_spec);
    assert_eq!(hit.outputs.len(), miss.outputs.len());
    for (name, tensor) in &miss.outputs {
        assert_eq!(
            hit.outputs[name].encode_to_vec(),
            tensor.encode_to_vec(),
            "{name}"
        );
    }
    assert_eq!(model_runs(&server, "hit_lr", 1).await, runs);

    let mut kserve = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let fresh = [6.3, 3.3, 6.0, 2.5];
    let miss = kserve
        .model_infer(v2_raw_request("hit_lr", fresh))
        .await
        .unwrap();
    let hit = kserve
        .model_infer(v2_raw_request("hit_lr", fresh))
        .await
        .unwrap();
    assert_eq!(
        (grpc_cache(&miss).as_deref(), grpc_cache(&hit).as_deref()),
        (Some("miss"), Some("hit"))
    );
    assert_eq!(
        hit.into_inner().encode_to_vec(),
        miss.into_inner().encode_to_vec()
    );

    // Failed requests are not cached: the same bad request fails twice, with no header.
    let bad = json!({ "instances": [[1.0, 2.0]] });
    for _ in 0..2 {
        let a = post(&server, "/v1/models/hit_lr:predict", &bad).await;
        assert_eq!((a.status, a.cache), (400, None));
    }

    assert!(
        metric(
            &server,
            "ferroserve_cache_hits_total",
            &[("model", "hit_lr"), ("tier", "memory")]
        )
        .await
            >= 8.0
    );
    assert!(
        metric(
            &server,
            "ferroserve_cache_misses_total",
            &[("model", "hit_lr")]
        )
        .await
            >= 7.0
    );
    assert!(metric(&server, "ferroserve_cache_entries", &[("tier", "memory")]).await >= 1.0);
    assert!(metric(&server, "ferroserve_cache_bytes", &[("tier", "memory")]).await > 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_never_answers_from_the_old_ones_entries() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "versioned", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "versioned", CACHE_ON);
    let server = TestServer::start_with(settings(repo.path())).await;
    // Iris-versicolor-like: the two models disagree on its probabilities.
    let row = [6.0, 2.9, 4.5, 1.5];
    let v1 = v2_infer(&server, "versioned", row).await;
    assert_eq!(v1.cache.as_deref(), Some("miss"));
    assert_eq!(
        v2_infer(&server, "versioned", row).await.cache.as_deref(),
        Some("hit")
    );

    install_model(repo.path(), "versioned", 2, &root_path(IRIS_DT));
    // The first answer from version 2 is computed by version 2.
    let deadline = Instant::now() + Duration::from_secs(30);
    let v2 = loop {
        let a = v2_infer(&server, "versioned", row).await;
        if a.json()["model_version"] == "2" {
            break a;
        }
        assert!(Instant::now() < deadline, "version 2 never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(v2.cache.as_deref(), Some("miss"), "{:?}", v2.json());
    assert_ne!(
        v2.json()["outputs"],
        v1.json()["outputs"],
        "version 2 answers with its own model"
    );
    let again = v2_infer(&server, "versioned", row).await;
    assert_eq!(again.cache.as_deref(), Some("hit"));
    assert_eq!(again.body, v2.body);
    // The V2 statistics count the version's own hits and misses, not the model's.
    let stats = get(&server, "/v2/models/versioned/versions/2/stats")
        .await
        .json();
    let inference = &stats["model_stats"][0]["inference_stats"];
    assert_eq!(inference["cache_miss"]["count"], 1, "{stats}");
    assert_eq!(inference["cache_hit"]["count"], 1, "{stats}");
    server.stop().await;
}

/// A model deleted and put back with other weights under the same name and version
/// number is another model: the key holds the version's content fingerprint, so
/// the old entries never answer for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_weights_under_a_reused_version_number_never_answer_from_old_entries() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "reused", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "reused", CACHE_ON);
    let server = TestServer::start_with(settings(repo.path())).await;
    let row = [6.0, 2.9, 4.5, 1.5];
    let old = v2_infer(&server, "reused", row).await;
    assert_eq!(old.cache.as_deref(), Some("miss"));
    assert_eq!(
        v2_infer(&server, "reused", row).await.cache.as_deref(),
        Some("hit")
    );
    let r = server
        .client
        .delete(server.url("/delete_model/reused"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    install_model(repo.path(), "reused", 1, &root_path(IRIS_DT));
    write_config(repo.path(), "reused", CACHE_ON);
    let r = post(&server, "/reload_model?modelname=reused", &json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let new = v2_infer(&server, "reused", row).await;
    assert_eq!(new.status, 200);
    assert_eq!(new.cache.as_deref(), Some("miss"), "{:?}", new.json());
    assert_ne!(
        new.json()["outputs"],
        old.json()["outputs"],
        "the new weights answer, not the old entries"
    );
    server.stop().await;
}

/// Load-time settings that change answers (`[postprocess] softmax`, `[fasttext] k`)
/// are in the keys: the same version loaded again (V2 unload then load) with softmax
/// turned on answered its cached logits until they expired, and the other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_loaded_again_with_other_answer_settings_never_answers_from_old_entries() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "animals",
        1,
        &root_path("tests/fixtures/preprocess/logits/model.onnx"),
    );
    let server = TestServer::start_with(settings(repo.path())).await;
    let mut answers = Vec::new();
    // Back to the first settings, the first settings' entries answer again.
    for (softmax, first_answer) in [(false, "miss"), (true, "miss"), (false, "hit")] {
        write_config(
            repo.path(),
            "animals",
            &format!("{CACHE_ON}[postprocess]\nsoftmax = {softmax}\n"),
        );
        for verb in ["unload", "load"] {
            let r = post(
                &server,
                &format!("/v2/repository/models/animals/{verb}"),
                &json!({}),
            )
            .await;
            assert_eq!(r.status, 200, "{verb}: {:?}", r.json());
        }
        let first = v2_infer(&server, "animals", ROW).await;
        assert_eq!(first.status, 200, "{:?}", first.json());
        assert_eq!(
            first.cache.as_deref(),
            Some(first_answer),
            "softmax {softmax}"
        );
        let again = v2_infer(&server, "animals", ROW).await;
        assert_eq!(again.cache.as_deref(), Some("hit"), "softmax {softmax}");
        assert_eq!(again.body, first.body);
        let data: Vec<f64> = first.json()["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let sum: f64 = data.iter().sum();
        assert_eq!(
            (sum - 1.0).abs() < 1e-5,
            softmax,
            "softmax {softmax}: {data:?}"
        );
        answers.push(data);
    }
    assert_eq!(answers[0], answers[2]);
    server.stop().await;
}

/// `[cache]` turned on in a config.toml edit applies to the version already serving,
/// without a reload: its content fingerprint, not computed at load (the cache was
/// off), is computed in the background at the first request that finds the cache
/// on; answers are cached from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_turned_on_by_an_edit_applies_without_a_reload() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "later", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "later", "");
    let server = TestServer::start_with(settings(repo.path())).await;
    assert_eq!(tfs_predict(&server, "later", ROW).await.cache, None);
    write_config(repo.path(), "later", CACHE_ON);
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let a = tfs_predict(&server, "later", ROW).await;
        assert_eq!(a.status, 200);
        if a.cache.is_some() {
            break a;
        }
        assert!(Instant::now() < deadline, "the cache never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(first.cache.as_deref(), Some("miss"));
    let again = tfs_predict(&server, "later", ROW).await;
    assert_eq!(again.cache.as_deref(), Some("hit"));
    assert_eq!(again.body, first.body);
    server.stop().await;
}

/// A version's fingerprint describes the files it loaded: files replaced in place
/// after the load (which only an explicit reload loads) leave a cache turned on
/// later off for that version. Its fingerprint was read from the new files, so the
/// old model's answers were keyed as the new one's, and after the reload the new
/// model answered a logistic regression's probabilities from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_replaced_after_the_load_never_key_the_old_models_answers() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "swapped", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "swapped", "");
    install_model(repo.path(), "reference", 1, &root_path(IRIS_DT));
    let server = TestServer::start_with(settings(repo.path())).await;
    let row = [6.0, 2.9, 4.5, 1.5];
    let lr = v2_infer(&server, "swapped", row).await;
    std::fs::copy(root_path(IRIS_DT), repo.path().join("swapped/1/model.onnx")).unwrap();
    write_config(repo.path(), "swapped", CACHE_ON);
    // The edit applies (the config is polled); the version, still the logistic
    // regression, answers uncached.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..20 {
        let a = v2_infer(&server, "swapped", row).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.cache, None, "the old model's answer was cached");
        assert_eq!(a.json()["outputs"], lr.json()["outputs"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = post(&server, "/reload_model?modelname=swapped", &json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let dt = v2_infer(&server, "reference", row).await;
    let new = v2_infer(&server, "swapped", row).await;
    assert_eq!(new.cache.as_deref(), Some("miss"), "{:?}", new.json());
    assert_eq!(new.json()["outputs"], dt.json()["outputs"]);
    let again = v2_infer(&server, "swapped", row).await;
    assert_eq!(again.cache.as_deref(), Some("hit"));
    assert_eq!(again.body, new.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_given_identical_inputs_never_share_entries() {
    let repo = tempfile::tempdir().unwrap();
    // The same file under two names: only the header can tell a shared entry.
    install_model(repo.path(), "twin_a", 1, &root_path(IRIS_LR));
    install_model(repo.path(), "twin_b", 1, &root_path(IRIS_LR));
    install_model(repo.path(), "twin_c", 1, &root_path(IRIS_DT));
    for m in ["twin_a", "twin_b", "twin_c"] {
        write_config(repo.path(), m, CACHE_ON);
    }
    let server = TestServer::start_with(settings(repo.path())).await;
    let row = [6.0, 2.9, 4.5, 1.5];
    let a = tfs_predict(&server, "twin_a", row).await;
    assert_eq!(a.cache.as_deref(), Some("miss"));
    assert_eq!(
        tfs_predict(&server, "twin_a", row).await.cache.as_deref(),
        Some("hit")
    );
    let runs_b = model_runs(&server, "twin_b", 1).await;
    let b = tfs_predict(&server, "twin_b", row).await;
    assert_eq!(
        b.cache.as_deref(),
        Some("miss"),
        "twin_b has entries of its own"
    );
    assert_eq!(model_runs(&server, "twin_b", 1).await, runs_b + 1.0);
    let c = tfs_predict(&server, "twin_c", row).await;
    assert_eq!(c.cache.as_deref(), Some("miss"));
    assert_ne!(c.body, a.body, "another model, another answer");
    assert_eq!(
        metric(
            &server,
            "ferroserve_cache_misses_total",
            &[("model", "twin_b")]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &server,
            "ferroserve_cache_hits_total",
            &[("model", "twin_b")]
        )
        .await,
        0.0
    );
    server.stop().await;
}

/// `admission = "second_miss"`: an answer is stored when its request misses for
/// the second time, so the third identical request is the first hit; a request
/// seen once stores nothing (counted). The default stores at the first miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_miss_admission_stores_an_answer_when_its_request_repeats() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "picky", 1, &root_path(IRIS_LR));
    write_config(
        repo.path(),
        "picky",
        "[cache]\nenabled = true\nadmission = \"second_miss\"\n",
    );
    let server = TestServer::start_with(settings(repo.path())).await;
    let not_admitted = || async {
        metric(
            &server,
            "ferroserve_cache_not_admitted_total",
            &[("model", "picky")],
        )
        .await
    };
    for row in [[6.0, 2.9, 4.5, 1.5], [5.9, 3.0, 5.1, 1.8]] {
        let before = not_admitted().await;
        let runs = model_runs(&server, "picky", 1).await;
        let first = tfs_predict(&server, "picky", row).await;
        assert_eq!(first.status, 200);
        assert_eq!(first.cache.as_deref(), Some("miss"));
        assert_eq!(not_admitted().await, before + 1.0, "the first miss stores");
        let second = tfs_predict(&server, "picky", row).await;
        assert_eq!(
            second.cache.as_deref(),
            Some("miss"),
            "stored at the first miss"
        );
        assert_eq!(not_admitted().await, before + 1.0);
        let third = tfs_predict(&server, "picky", row).await;
        assert_eq!(third.cache.as_deref(), Some("hit"));
        assert_eq!(third.body, first.body);
        assert_eq!(model_runs(&server, "picky", 1).await, runs + 2.0);
    }
    // Switched back by an edit (live, like the rest of [cache]): stored at the
    // first miss, so a new request's second call is a hit.
    write_config(repo.path(), "picky", CACHE_ON);
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        let row = [6.3, 3.3, 6.0, 2.5 + n as f32 / 100.0];
        assert_eq!(
            tfs_predict(&server, "picky", row).await.cache.as_deref(),
            Some("miss")
        );
        if tfs_predict(&server, "picky", row).await.cache.as_deref() == Some("hit") {
            break;
        }
        assert!(Instant::now() < deadline, "the edit did not apply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_the_models_ttl() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "ttl_lr", 1, &root_path(IRIS_LR));
    write_config(
        repo.path(),
        "ttl_lr",
        "[cache]\nenabled = true\nttl_secs = 1\n",
    );
    let server = TestServer::start_with(settings(repo.path())).await;
    let started = Instant::now();
    assert_eq!(
        tfs_predict(&server, "ttl_lr", ROW).await.cache.as_deref(),
        Some("miss")
    );
    assert_eq!(
        tfs_predict(&server, "ttl_lr", ROW).await.cache.as_deref(),
        Some("hit")
    );
    eventually("the entry expires", Duration::from_secs(15), || async {
        tfs_predict(&server, "ttl_lr", ROW).await.cache.as_deref() == Some("miss")
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(1), "expired early");
    assert_eq!(
        tfs_predict(&server, "ttl_lr", ROW).await.cache.as_deref(),
        Some("hit"),
        "stored afresh"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cache_there_is_no_header_and_the_backend_runs_every_time() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "plain_lr", 1, &root_path(IRIS_LR));
    install_model(repo.path(), "no_tier_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "no_tier_lr", CACHE_ON);
    // The default server: plain_lr has no [cache].
    let server = TestServer::start_with(settings(repo.path())).await;
    let before = model_runs(&server, "plain_lr", 1).await;
    for _ in 0..3 {
        let a = tfs_predict(&server, "plain_lr", ROW).await;
        assert_eq!((a.status, a.cache), (200, None));
    }
    assert_eq!(model_runs(&server, "plain_lr", 1).await, before + 3.0);
    server.stop().await;

    // A server with no tier at all: [cache] enabled changes nothing.
    let server = TestServer::start_with(Settings {
        cache_max_bytes: 0,
        ..settings(repo.path())
    })
    .await;
    let before = model_runs(&server, "no_tier_lr", 1).await;
    for _ in 0..3 {
        let a = tfs_predict(&server, "no_tier_lr", ROW).await;
        assert_eq!((a.status, a.cache), (200, None));
    }
    assert_eq!(model_runs(&server, "no_tier_lr", 1).await, before + 3.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_settings_in_config_toml_apply_live_to_the_served_version() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "live_lr", 1, &root_path(IRIS_LR));
    let server = TestServer::start_with(settings(repo.path())).await;
    assert_eq!(tfs_predict(&server, "live_lr", ROW).await.cache, None);

    write_config(repo.path(), "live_lr", CACHE_ON);
    eventually(
        "[cache] enabled applies",
        Duration::from_secs(20),
        || async { tfs_predict(&server, "live_lr", ROW).await.cache.is_some() },
    )
    .await;
    let a = tfs_predict(&server, "live_lr", ROW).await;
    assert_eq!(a.cache.as_deref(), Some("hit"));
    let v2 = v2_infer(&server, "live_lr", ROW).await;
    assert_eq!(
        v2.json()["model_version"],
        "1",
        "the same version, no reload"
    );

    write_config(repo.path(), "live_lr", "[cache]\nenabled = false\n");
    eventually(
        "[cache] disabled applies",
        Duration::from_secs(20),
        || async { tfs_predict(&server, "live_lr", ROW).await.cache.is_none() },
    )
    .await;
    let before = model_runs(&server, "live_lr", 1).await;
    assert_eq!(tfs_predict(&server, "live_lr", ROW).await.cache, None);
    assert_eq!(
        model_runs(&server, "live_lr", 1).await,
        before + 1.0,
        "the backend runs"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_tier_stays_within_its_bytes_and_counts_evictions() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "small_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "small_lr", CACHE_ON);
    let limit = 4096u64;
    let server = TestServer::start_with(Settings {
        cache_max_bytes: limit,
        ..settings(repo.path())
    })
    .await;
    for i in 0..60 {
        let row = [4.0 + i as f32 * 0.05, 3.0, 1.4, 0.2];
        assert_eq!(tfs_predict(&server, "small_lr", row).await.status, 200);
    }
    let bytes = metric(&server, "ferroserve_cache_bytes", &[("tier", "memory")]).await;
    assert!(bytes > 0.0 && bytes <= limit as f64, "{bytes} bytes held");
    let evicted = metric(
        &server,
        "ferroserve_cache_evictions_total",
        &[
            ("model", "small_lr"),
            ("tier", "memory"),
            ("reason", "size"),
        ],
    )
    .await;
    assert!(evicted >= 40.0, "only {evicted} evictions");
    server.stop().await;
}

fn redis_settings(repo: &Path, redis: &RedisServer) -> Settings {
    Settings {
        redis_url: Some(redis.url()),
        // Generous: the CI machine is busy, and a slow lookup is only a miss.
        redis_timeout: Duration::from_millis(500),
        ..settings(repo)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_hits_through_one_redis() {
    let redis = RedisServer::start();
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "shared_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "shared_lr", CACHE_ON);
    install_model(
        repo.path(),
        "shared_ft",
        1,
        &root_path("tests/fixtures/fasttext/softmax.bin"),
    );
    write_config(repo.path(), "shared_ft", CACHE_ON);
    let a = TestServer::start_with(redis_settings(repo.path(), &redis)).await;
    let b = TestServer::start_with(redis_settings(repo.path(), &redis)).await;

    let miss = v2_infer(&a, "shared_lr", ROW).await;
    assert_eq!(miss.cache.as_deref(), Some("miss"));
    // The write to Redis runs beside the answer: wait until it is there.
    eventually(
        "the entry reaches Redis",
        Duration::from_secs(10),
        || async { redis.key_count() >= 1 },
    )
    .await;
    let runs = model_runs(&b, "shared_lr", 1).await;
    let hit = v2_infer(&b, "shared_lr", ROW).await;
    assert_eq!(
        hit.cache.as_deref(),
        Some("hit"),
        "server b answers from a's entry"
    );
    assert_eq!(hit.body, miss.body, "bit for bit");
    assert_eq!(
        model_runs(&b, "shared_lr", 1).await,
        runs,
        "b's backend never ran"
    );
    assert!(
        metric(
            &b,
            "ferroserve_cache_hits_total",
            &[("model", "shared_lr"), ("tier", "redis")]
        )
        .await
            >= 1.0
    );
    // Over gRPC too, from the same entry (kept in b's memory now).
    let mut kserve = GrpcInferenceServiceClient::new(b.grpc_channel().await);
    let r = kserve
        .model_infer(v2_raw_request("shared_lr", ROW))
        .await
        .unwrap();
    assert_eq!(grpc_cache(&r).as_deref(), Some("hit"));

    // The key is namespaced, and the TTL set in Redis is the model's.
    let keys = redis.command("KEYS *").unwrap();
    assert!(keys.contains("ferroserve:cache:v1:"), "{keys}");

    // An entry that decodes but does not fit the request (an output renamed, a
    // dtype or a row count changed: written by something else) is corrupt and a
    // miss; it was served as a hit ({"zzz": …}, or a 400 for a hit).
    let key = keys
        .lines()
        .find(|l| l.starts_with("ferroserve:cache:v1:"))
        .unwrap()
        .to_string();
    let c = TestServer::start_with(Settings {
        cache_max_bytes: 0,
        ..redis_settings(repo.path(), &redis)
    })
    .await;
    // A fastText answer (labels and probabilities; its sentence vector only when
    // asked) is taken from Redis too: it was counted corrupt, every time.
    let text = json!({"instances": ["hello there"]});
    let first = post(&a, "/v1/models/shared_ft:predict", &text).await;
    assert_eq!(first.cache.as_deref(), Some("miss"), "{:?}", first.json());
    eventually(
        "the fastText entry reaches Redis",
        Duration::from_secs(10),
        || async { redis.key_count() >= 2 },
    )
    .await;
    let from_redis = post(&c, "/v1/models/shared_ft:predict", &text).await;
    assert_eq!(
        from_redis.cache.as_deref(),
        Some("hit"),
        "{:?}",
        from_redis.json()
    );
    assert_eq!(from_redis.body, first.body);
    let label = Tensor::new(vec![1], TensorData::I64(vec![0])).unwrap();
    let proba = Tensor::new(vec![1, 3], TensorData::F32(vec![0.5, 0.25, 0.25])).unwrap();
    // The entry the servers wrote; after each miss below, c writes it back in the
    // background, which must land before the next entry is planted (else it
    // overwrites that one and the request is a hit).
    let get = || redis.command(&format!("GET {key}")).unwrap();
    let fresh = get();
    for unfit in [
        vec![
            ("zzz".to_string(), label.clone()),
            ("probabilities".to_string(), proba.clone()),
        ],
        vec![
            (
                "label".to_string(),
                label.clone().cast(DataType::F64).unwrap(),
            ),
            ("probabilities".to_string(), proba.clone()),
        ],
        vec![
            (
                "label".to_string(),
                Tensor::new(vec![2], TensorData::I64(vec![0, 1])).unwrap(),
            ),
            ("probabilities".to_string(), proba.clone()),
        ],
        vec![("label".to_string(), label.clone())],
    ] {
        let reply = redis
            .set_bytes(&key, &ferroserve::cache::codec::encode(&unfit))
            .unwrap();
        assert!(reply.starts_with("+OK"), "{reply}");
        let again = v2_infer(&c, "shared_lr", ROW).await;
        assert_eq!(again.status, 200, "{:?}", again.json());
        assert_eq!(again.cache.as_deref(), Some("miss"), "{unfit:?}");
        assert_eq!(again.body, miss.body, "{unfit:?}");
        eventually(
            "the answer is written back to Redis",
            Duration::from_secs(10),
            || async { get() == fresh },
        )
        .await;
    }
    let corrupt = metric(
        &c,
        "ferroserve_cache_redis_errors_total",
        &[("op", "get"), ("reason", "corrupt")],
    )
    .await;
    assert!(corrupt >= 4.0, "{corrupt}");
    c.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_stops_nothing_and_is_used_once_it_is_up() {
    let mut redis = RedisServer::start();
    redis.kill();
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "late_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "late_lr", CACHE_ON);
    // Redis only, so that every hit comes from it.
    let server = TestServer::start_with(Settings {
        cache_max_bytes: 0,
        ..redis_settings(repo.path(), &redis)
    })
    .await;
    for _ in 0..3 {
        let a = tfs_predict(&server, "late_lr", ROW).await;
        assert_eq!((a.status, a.cache.as_deref()), (200, Some("miss")));
    }
    redis.restart();
    eventually(
        "hits from Redis once it is up",
        Duration::from_secs(30),
        || async { tfs_predict(&server, "late_lr", ROW).await.cache.as_deref() == Some("hit") },
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_fails_no_prediction_and_hits_resume_after_restart() {
    let mut redis = RedisServer::start();
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "load_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "load_lr", CACHE_ON);
    let server = Arc::new(
        TestServer::start_with(Settings {
            cache_max_bytes: 0,
            redis_timeout: Duration::from_millis(2000),
            ..redis_settings(repo.path(), &redis)
        })
        .await,
    );

    // A client predicting continuously, counting answers, failures and hits.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let hits = Arc::new(AtomicU64::new(0));
    let client = {
        let (server, stop, answered, failed, hits) = (
            server.clone(),
            stop.clone(),
            answered.clone(),
            failed.clone(),
            hits.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let a = tfs_predict(&server, "load_lr", ROW).await;
                if a.status == 200 {
                    answered.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed prediction: {a:?}");
                }
                if a.cache.as_deref() == Some("hit") {
                    hits.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    eventually("hits from Redis", Duration::from_secs(20), || async {
        hits.load(Ordering::Relaxed) > 0
    })
    .await;

    let errors = || metric(&server, "ferroserve_cache_redis_errors_total", &[]);
    let errors_before = errors().await;
    redis.kill();
    let answered_at_kill = answered.load(Ordering::Relaxed);
    eventually(
        "the Redis error counter rises",
        Duration::from_secs(20),
        || async { errors().await > errors_before },
    )
    .await;
    // Keep predicting without Redis for a while.
    eventually(
        "predictions go on without Redis",
        Duration::from_secs(30),
        || async { answered.load(Ordering::Relaxed) >= answered_at_kill + 50 },
    )
    .await;
    // Once the supervisor has found Redis gone (a failed ping), requests skip it
    // rather than each waiting on the reconnection (up to the lookup bound, 2 s
    // here): ten requests in a row take less than one bound together.
    let pings = || {
        metric(
            &server,
            "ferroserve_cache_redis_errors_total",
            &[("op", "ping")],
        )
    };
    let pings_failed = pings().await;
    eventually("a ping fails", Duration::from_secs(20), || async {
        pings().await > pings_failed
    })
    .await;
    let started = Instant::now();
    for _ in 0..10 {
        let a = tfs_predict(&server, "load_lr", ROW).await;
        assert_eq!((a.status, a.cache.as_deref()), (200, Some("miss")));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "ten requests waited {:?} for a Redis that is down",
        started.elapsed()
    );

    redis.restart();
    let hits_at_restart = hits.load(Ordering::Relaxed);
    eventually(
        "hits resume after Redis restarts",
        Duration::from_secs(30),
        || async { hits.load(Ordering::Relaxed) > hits_at_restart },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no prediction failed");
    assert!(answered.load(Ordering::Relaxed) > 50);
    Arc::try_unwrap(server).ok().unwrap().stop().await;
}

/// A request naming every output the model answers unasked, in its order, is the
/// same answer as one naming none, and shares its entry: a KServe V2 request
/// listing them, and the simple API, which always names its outputs (both missed
/// after the same request naming none). Classify, which asks for its scores only,
/// shares with a predict asking that output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naming_every_output_in_the_models_order_shares_the_entry_of_naming_none() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "all_lr", 1, &root_path(IRIS_LR));
    write_config(repo.path(), "all_lr", &format!("{FEATURES}{CACHE_ON}"));
    let server = TestServer::start_with(settings(repo.path())).await;

    // KServe V2: none, then every output listed.
    let none = v2_infer(&server, "all_lr", ROW).await;
    assert_eq!((none.status, none.cache.as_deref()), (200, Some("miss")));
    let runs = model_runs(&server, "all_lr", 1).await;
    let mut listed = v2_body(ROW);
    listed["outputs"] = json!([{ "name": "label" }, { "name": "probabilities" }]);
    let every = post(&server, "/v2/models/all_lr/infer", &listed).await;
    assert_eq!(
        (every.status, every.cache.as_deref()),
        (200, Some("hit")),
        "{every:?}"
    );
    assert_eq!(every.body, none.body, "the same answer");
    assert_eq!(model_runs(&server, "all_lr", 1).await, runs);
    // Another order is an entry of its own (a hit would be given as stored, in
    // the order it was asked, to the next request naming none).
    listed["outputs"] = json!([{ "name": "probabilities" }, { "name": "label" }]);
    let swapped = post(&server, "/v2/models/all_lr/infer", &listed).await;
    assert_eq!(swapped.cache.as_deref(), Some("miss"));

    // The simple API after a TF Serving predict of the same row.
    let row = [6.0, 2.9, 4.5, 1.5];
    let tfs = tfs_predict(&server, "all_lr", row).await;
    assert_eq!((tfs.status, tfs.cache.as_deref()), (200, Some("miss")));
    let simple = post(
        &server,
        "/predict",
        &json!({ "model_id": "all_lr", "features": row }),
    )
    .await;
    assert_eq!(
        (simple.status, simple.cache.as_deref()),
        (200, Some("hit")),
        "{simple:?}"
    );
    let (tfs, simple) = (tfs.json(), simple.json());
    assert_eq!(
        simple["probabilities"], tfs["predictions"][0]["probabilities"],
        "{simple} {tfs}"
    );
    // ... and the other way round.
    let row = [6.3, 3.3, 6.0, 2.5];
    let simple = post(
        &server,
        "/predict",
        &json!({ "model_id": "all_lr", "features": row }),
    )
    .await;
    assert_eq!(simple.cache.as_deref(), Some("miss"), "{simple:?}");
    assert_eq!(
        tfs_predict(&server, "all_lr", row).await.cache.as_deref(),
        Some("hit")
    );

    // Classify asks for the scores alone: the entry of a predict asking that output.
    let row = [4.9, 3.0, 1.4, 0.2];
    let mut scores = v2_body(row);
    scores["outputs"] = json!([{ "name": "probabilities" }]);
    let predicted = post(&server, "/v2/models/all_lr/infer", &scores).await;
    assert_eq!(predicted.cache.as_deref(), Some("miss"));
    let classify = json!({ "examples": [{
        "sepal_length": 4.9, "sepal_width": 3.0, "petal_length": 1.4, "petal_width": 0.2
    }] });
    let classified = post(&server, "/v1/models/all_lr:classify", &classify).await;
    assert_eq!(
        (classified.status, classified.cache.as_deref()),
        (200, Some("hit")),
        "{classified:?}"
    );
    server.stop().await;
}
