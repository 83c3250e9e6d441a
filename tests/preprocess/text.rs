//! Text through the pre-processing pipeline (issue 15): the token ids and the
//! embeddings of the Python reference (HuggingFace tokenizers, MiniLM).

use super::*;

pub(super) const MINILM: &str = "tests/fixtures/preprocess/minilm";

pub(super) fn install_text_model(repo: &std::path::Path, name: &str, onnx: &str, config: &str) {
    let dest = install_model(repo, name, 1, &root_path(&format!("{MINILM}/{onnx}")));
    std::fs::rename(&dest, dest.with_file_name("model.onnx")).unwrap();
    std::fs::copy(
        root_path(&format!("{MINILM}/tokenizer.json")),
        dest.with_file_name("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(repo.join(name).join("config.toml"), config).unwrap();
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
