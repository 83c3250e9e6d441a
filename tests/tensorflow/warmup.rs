//! TF Serving warm-up records: replayed, broken, of the wrong shape, and a shutdown
//! during warm-up.

use super::*;

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
