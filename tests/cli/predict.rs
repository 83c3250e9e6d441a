//! `ferroserve predict`: what the file says is what is sent, a name given twice
//! refused, stdin answered a batch at a time, no temporary file left when
//! interrupted.

use super::*;

/// `predict` sends what the file says: CSV cells as text, which the server reads
/// as numbers for numeric inputs (iris from CSV answers as from JSON lines, to
/// the bit) and keeps for text inputs (a ColumnTransformer's one-hot columns
/// answer as scikit-learn did); a CSV column or JSON key given twice is refused
/// with its line (the last one was kept); rows from stdin are answered a batch at
/// a time, before the input ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_sends_what_the_file_says() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    install_model(
        &repo,
        "bank",
        1,
        &root_path("tests/fixtures/onnx/bank_columns/model.onnx"),
    );
    let server = TestServer::start_with(test_settings(&repo)).await;
    let url = server.base.clone();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let predict = |model: &str, input: &str| {
        let c = cli(
            &url,
            &["predict", model, "--input", input, "--batch-size", "3"],
        );
        run(c)
    };

    let (rows, _) = iris_expected();
    let mut csv = format!("{}\n", FEATURES.join(","));
    let mut jsonl = String::new();
    for r in &rows {
        let cells: Vec<String> = r.iter().map(|v| v.to_string()).collect();
        csv.push_str(&format!("{}\n", cells.join(",")));
        jsonl.push_str(&format!("{}\n", serde_json::to_string(r).unwrap()));
    }
    std::fs::write(path("iris.csv"), &csv).unwrap();
    std::fs::write(path("iris.jsonl"), &jsonl).unwrap();
    let (code, from_csv) = predict("iris", &path("iris.csv")).await;
    assert_eq!(code, 0, "{from_csv}");
    let (code, from_jsonl) = predict("iris", &path("iris.jsonl")).await;
    assert_eq!(code, 0, "{from_jsonl}");
    let answers = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with('{'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(answers(&from_csv).len(), rows.len(), "{from_csv}");
    assert_eq!(answers(&from_csv), answers(&from_jsonl));
    // Read as a scoring job reads them: `.tsv` tab-separated, `.txt` CSV; JSON
    // lines after a UTF-8 byte-order mark (refused as "not JSON").
    std::fs::write(path("iris.tsv"), csv.replace(',', "\t")).unwrap();
    std::fs::write(path("iris.txt"), &csv).unwrap();
    std::fs::write(path("bom.jsonl"), format!("\u{feff}{jsonl}")).unwrap();
    for file in ["iris.tsv", "iris.txt", "bom.jsonl"] {
        let (code, out) = predict("iris", &path(file)).await;
        assert_eq!(code, 0, "{file}: {out}");
        assert_eq!(answers(&out), answers(&from_csv), "{file}");
    }
    // CSV under another name: the error says how the file was read.
    std::fs::write(path("iris.data"), &csv).unwrap();
    let (code, out) = predict("iris", &path("iris.data")).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("iris.data is read as JSON lines: only files named .csv, .tsv or .txt"),
        "{out}"
    );

    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(root_path("tests/fixtures/onnx/bank_columns/expected.json"))
            .unwrap(),
    )
    .unwrap();
    let columns = ["age", "job", "marital", "balance"];
    let mut csv = format!("{}\n", columns.join(","));
    let n = expected["sklearn_predict"].as_array().unwrap().len();
    for i in 0..n {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match &expected["columns"][c][i] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            })
            .collect();
        csv.push_str(&format!("{}\n", cells.join(",")));
    }
    std::fs::write(path("bank.csv"), csv).unwrap();
    let (code, out) = predict("bank", &path("bank.csv")).await;
    assert_eq!(code, 0, "{out}");
    let got: Vec<Value> = answers(&out)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), n, "{out}");
    for (i, answer) in got.iter().enumerate() {
        assert_eq!(
            answer["prediction"], expected["sklearn_predict"][i],
            "row {i}"
        );
        for (p, q) in answer["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .zip(expected["sklearn_predict_proba"][i].as_array().unwrap())
        {
            assert!(
                (p.as_f64().unwrap() - q.as_f64().unwrap()).abs() < 1e-5,
                "row {i}: {answer} against {}",
                expected["sklearn_predict_proba"][i]
            );
        }
    }
    server.stop().await;
}

/// A CSV column or JSON key given twice is refused with its line, as a file that
/// cannot be read (1): the CLI kept the last value without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_refuses_a_name_given_twice() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(test_settings(&repo(dir.path()))).await;
    let url = server.base.clone();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let predict = |model: &str, input: &str| run(cli(&url, &["predict", model, "--input", input]));
    std::fs::write(
        path("twice.csv"),
        format!("{},sepal_length\n5.1,3.5,1.4,0.2,7.9\n", FEATURES.join(",")),
    )
    .unwrap();
    let (code, out) = predict("iris", &path("twice.csv")).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("line 1 of") && out.contains("two columns named \"sepal_length\""),
        "{out}"
    );
    std::fs::write(
        path("twice.jsonl"),
        "{\"sepal_length\": 5.1, \"sepal_width\": 3.5, \"petal_length\": 1.4, \"petal_width\": 0.2}\n\
         {\"sepal_length\": 5.1, \"sepal_width\": 3.5, \"petal_length\": 1.4, \"petal_width\": 0.2, \"sepal_length\": 7.9}\n",
    )
    .unwrap();
    let (code, out) = predict("iris", &path("twice.jsonl")).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("line 2 of") && out.contains("\"sepal_length\" is given twice"),
        "{out}"
    );
    server.stop().await;
}

/// Rows from stdin are answered a batch at a time, while the input is still open
/// (nothing came before its end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_answers_stdin_a_batch_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(test_settings(&repo(dir.path()))).await;
    let url = server.base.clone();
    let mut c = cli(
        &url,
        &["predict", "iris", "--input", "-", "--batch-size", "1"],
    );
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    use std::io::{BufRead, Write};
    writeln!(stdin, "[5.1, 3.5, 1.4, 0.2]").unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let first = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap();
    drop(stdin);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let first = first.expect("no answer before the input ended");
    assert!(first.contains("prediction"), "{first}");
    assert!(status.success());
    server.stop().await;
}

/// Ctrl-C (or SIGTERM) while `predict --output FILE` waits for its input removes
/// the temporary file it writes (`.FILE.<pid>.tmp`, left behind before) and leaves
/// the old FILE whole; the command ends by the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_predict_leaves_no_temporary_file() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let server = TestServer::start_with(test_settings(&repo)).await;
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let output = out_dir.join("answers.jsonl");
    std::fs::write(&output, "old\n").unwrap();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let mut child = cli(
            &server.base,
            &[
                "predict",
                "iris",
                "--input",
                "-",
                "--batch-size",
                "1",
                "--output",
                &output.display().to_string(),
            ],
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        use std::io::Write;
        writeln!(stdin, "[5.1, 3.5, 1.4, 0.2]").unwrap();
        stdin.flush().unwrap();
        // The temporary file is there once the command runs (its handler is in
        // place before it is made).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::read_dir(&out_dir).unwrap().count() < 2 {
            assert!(std::time::Instant::now() < deadline, "no temporary file");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        drop(stdin);
        assert_eq!(status.signal(), Some(signal), "{status:?}");
        let left: Vec<String> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["answers.jsonl"]);
        assert_eq!(std::fs::read_to_string(&output).unwrap(), "old\n");
    }
    server.stop().await;
}
