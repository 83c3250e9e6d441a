//! What every protocol must agree on: a scalar is not a row, message size limits
//! and deadlines.

use super::*;

/// A 0-d scalar is no row of a `[-1]` input, on any protocol (TensorFlow, TF
/// Serving and Triton refuse a tensor of rank 0 for an input of rank 1): 400 /
/// INVALID_ARGUMENT naming the input and both shapes. The same value as one row
/// (`[1]`) is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scalar_is_not_one_row_of_a_vector_input_on_any_protocol() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let words = |message: &str| {
        message.contains("\"f64\"") && message.contains("shape []") && message.contains("[-1]")
    };
    // multi_io's inputs, one row each; `f64` (`[-1]`) with the shape given.
    let v2_rest = |f64_shape: Value| {
        json!({"inputs": [
            {"name": "f32", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2.0]},
            {"name": "f64", "shape": f64_shape, "datatype": "FP64", "data": [0.5]},
            {"name": "i32", "shape": [1], "datatype": "INT32", "data": [3]},
            {"name": "i64", "shape": [1], "datatype": "INT64", "data": [4]},
            {"name": "flag", "shape": [1], "datatype": "BOOL", "data": [true]},
            {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["dog"]},
        ]})
    };
    let (status, body) = server
        .post_json("/v2/models/multi_io/infer", &v2_rest(json!([1])))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post_json("/v2/models/multi_io/infer", &v2_rest(json!([])))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(words(body["error"].as_str().unwrap()), "{body}");
    // TF Serving REST, columnar: a plain number is a scalar there too.
    let (status, body) = server
        .post_json(
            "/v1/models/multi_io:predict",
            &json!({"inputs": {"f32": [[1.5, 2.0]], "f64": 0.5, "i32": [3], "i64": [4],
                               "flag": [true], "text": ["dog"]}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(words(body["error"].as_str().unwrap()), "{body}");

    // V2 gRPC, typed and raw.
    let mut v2_client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let typed = |f64_shape: &[i64]| {
        let contents = |f: fn(&mut InferTensorContents)| {
            let mut c = InferTensorContents::default();
            f(&mut c);
            c
        };
        vec![
            v2_input(
                "f32",
                "FP32",
                &[1, 2],
                contents(|c| c.fp32_contents = vec![1.5, 2.0]),
            ),
            v2_input(
                "f64",
                "FP64",
                f64_shape,
                contents(|c| c.fp64_contents = vec![0.5]),
            ),
            v2_input("i32", "INT32", &[1], contents(|c| c.int_contents = vec![3])),
            v2_input(
                "i64",
                "INT64",
                &[1],
                contents(|c| c.int64_contents = vec![4]),
            ),
            v2_input(
                "flag",
                "BOOL",
                &[1],
                contents(|c| c.bool_contents = vec![true]),
            ),
            v2_input(
                "text",
                "BYTES",
                &[1],
                contents(|c| c.bytes_contents = vec![b"dog".to_vec()]),
            ),
        ]
    };
    v2_client
        .model_infer(infer_request("multi_io", typed(&[1])))
        .await
        .unwrap();
    let status = v2_client
        .model_infer(infer_request("multi_io", typed(&[])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(words(status.message()), "{status:?}");
    let mut raw = infer_request("multi_io", typed(&[]));
    for input in &mut raw.inputs {
        input.contents = None;
    }
    let raw_contents: [Vec<u8>; 6] = [
        [1.5f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect(),
        0.5f64.to_le_bytes().to_vec(),
        3i32.to_le_bytes().to_vec(),
        4i64.to_le_bytes().to_vec(),
        vec![1],
        [3u32.to_le_bytes().as_slice(), b"dog"].concat(),
    ];
    raw.raw_input_contents = raw_contents.into_iter().map(Into::into).collect();
    let status = v2_client.model_infer(raw).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(words(status.message()), "{status:?}");

    // TF Serving Predict.
    let mut tf_client = PredictionServiceClient::new(server.grpc_channel().await);
    let tensor = |dtype: Dt, dims: &[i64], fill: fn(&mut TensorProto)| {
        let mut t = TensorProto {
            dtype: dtype as i32,
            tensor_shape: shape(dims),
            ..Default::default()
        };
        fill(&mut t);
        t
    };
    let request = |f64_dims: &[i64]| tfs::PredictRequest {
        model_spec: spec("multi_io"),
        inputs: HashMap::from([
            (
                "f32".to_string(),
                tensor(Dt::DtFloat, &[1, 2], |t| t.float_val = vec![1.5, 2.0]),
            ),
            (
                "f64".to_string(),
                tensor(Dt::DtDouble, f64_dims, |t| t.double_val = vec![0.5]),
            ),
            (
                "i32".to_string(),
                tensor(Dt::DtInt32, &[1], |t| t.int_val = vec![3]),
            ),
            (
                "i64".to_string(),
                tensor(Dt::DtInt64, &[1], |t| t.int64_val = vec![4]),
            ),
            (
                "flag".to_string(),
                tensor(Dt::DtBool, &[1], |t| t.bool_val = vec![true]),
            ),
            (
                "text".to_string(),
                tensor(Dt::DtString, &[1], |t| t.string_val = vec![b"dog".to_vec()]),
            ),
        ]),
        output_filter: vec![],
    };
    tf_client.predict(request(&[1])).await.unwrap();
    let status = tf_client.predict(request(&[])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(words(status.message()), "{status:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_limits_are_resource_exhausted_and_deadlines_are_honoured() {
    let repo = repo();
    let mut settings = test_settings(repo.path());
    settings.grpc_max_receive_bytes = 4096;
    settings.grpc_max_send_bytes = 2048;
    let server = TestServer::start_with(settings).await;
    let mut client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let rows: Vec<Vec<f32>> = vec![vec![5.1, 3.5, 1.4, 0.2]; 200];

    // 200 rows are 3.2 kB of floats in, but about 3.4 kB of probabilities and labels out.
    let big_out = infer_request(
        "iris_lr",
        vec![v2_input("input", "FP32", &[200, 4], f32_contents(&rows))],
    );
    let status = client.model_infer(big_out).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let rows: Vec<Vec<f32>> = vec![vec![5.1, 3.5, 1.4, 0.2]; 400];
    let big_in = infer_request(
        "iris_lr",
        vec![v2_input("input", "FP32", &[400, 4], f32_contents(&rows))],
    );
    let status = client.model_infer(big_in).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // The connection survives both.
    let small = infer_request(
        "iris_lr",
        vec![v2_input("input", "FP32", &[1, 4], f32_contents(&rows[..1]))],
    );
    assert!(client.model_infer(small.clone()).await.is_ok());

    // A deadline that has passed by the time the server looks is DEADLINE_EXCEEDED from
    // the server itself. tonic's client enforces `grpc-timeout` too and would race the
    // server, so the call is sent as raw HTTP/2 with the header and no client timer.
    let mut framed = vec![0u8];
    let message = small.encode_to_vec();
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let raw = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = raw
        .post(format!(
            "http://{}/inference.GRPCInferenceService/ModelInfer",
            server.grpc_addr.unwrap()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "1n")
        .body(framed)
        .send()
        .await
        .unwrap();
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        grpc_status.as_deref(),
        Some("4"),
        "DEADLINE_EXCEEDED; headers {:?}",
        response.headers()
    );
    let mut request = tonic::Request::new(small.clone());
    request.set_timeout(Duration::from_secs(30));
    assert!(client.model_infer(request).await.is_ok());

    // A client that gzips its messages (tritonclient's compression_algorithm) is
    // answered (it was UNIMPLEMENTED); one whose message inflates past the receive
    // limit is refused as a message that large is, and the server lives on.
    let mut gzipped = GrpcInferenceServiceClient::new(server.grpc_channel().await)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let answer = gzipped
        .model_infer(small.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.model_name, "iris_lr");
    let zeros = vec![vec![0.0f32; 4]; 400];
    let bomb = infer_request(
        "iris_lr",
        vec![v2_input("input", "FP32", &[400, 4], f32_contents(&zeros))],
    );
    let status = gzipped.model_infer(bomb).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let mut deflated = GrpcInferenceServiceClient::new(server.grpc_channel().await)
        .send_compressed(tonic::codec::CompressionEncoding::Deflate);
    let answer = deflated
        .model_infer(small.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.model_name, "iris_lr");
    assert!(client.model_infer(small).await.is_ok());

    // gRPC requests show in the metrics with their protocol.
    let metrics = server.scrape().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferroserve_requests_total")
                && l.contains("protocol=\"v2_grpc\"")),
        "{metrics}"
    );
    server.stop().await;
}
