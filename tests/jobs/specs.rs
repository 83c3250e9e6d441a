//! Specs refused at once naming the field, and problems found while reading that
//! fail the job clearly.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_refused_at_once_naming_the_field() {
    let env = env();
    write_csv(&env.data.join("in.csv"), &iris_rows(5));
    let server = TestServer::start_with(settings(&env)).await;
    let data_dir = env.data.display().to_string();
    let cases = [
        (
            json!({"kind": "score", "spec": {"model": "nope", "source": {"path": "in.csv"}, "sink": {"path": "o.csv"}}}),
            "spec.model",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "../../etc/passwd.csv"}, "sink": {"path": "o.csv"}}}),
            "../../etc/passwd.csv",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "in.csv"}, "sink": {"path": "/tmp/o.csv"}}}),
            "spec.sink.path",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "sink": {"path": "o.csv"}}}),
            "spec.source: missing",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "absent.csv"}, "sink": {"path": "o.csv"}}}),
            "spec.source.path",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"url": "mongodb://db/bank", "query": "x"}, "sink": {"path": "o.csv"}}}),
            "MongoDB is not supported",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "in.csv"}, "sink": {"path": "o.csv"}, "outputs": ["nope"]}}),
            "spec.outputs",
        ),
        (json!({"kind": "score"}), "spec: missing"),
        // The version or label the model does not have is named as the version.
        (
            json!({"kind": "score", "spec": {"model": "iris", "version": 99, "source": {"path": "in.csv"}, "sink": {"path": "o.csv"}}}),
            "spec.version: model \"iris\" has no version 99",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "version": "nolabel", "source": {"path": "in.csv"}, "sink": {"path": "o.csv"}}}),
            "spec.version: model \"iris\" has no label \"nolabel\"",
        ),
        // A CSV dialect that cannot be read: a line break, or the quote as delimiter.
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "in.csv", "delimiter": "\n"}, "sink": {"path": "o.csv"}}}),
            "spec.source.delimiter: '\\n' is a line break",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "in.csv", "quote": "\r"}, "sink": {"path": "o.csv"}}}),
            "spec.source.quote: '\\r' is a line break",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "in.csv", "delimiter": ";", "quote": ";"}, "sink": {"path": "o.csv"}}}),
            "spec.source.quote: ';' is also the delimiter",
        ),
        (
            json!({"kind": "train", "spec": {"model": "bank", "source": {"path": "in.csv"}, "schema": {"label": {"key": "y"}, "features": [{"key": "age"}]}, "algorithm": {"name": "logistic_regression"}}}),
            "spec.schema: no column",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = server.post_json("/v1/jobs", &body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(expected), "{body} → {message}");
        assert!(
            !message.contains(&data_dir),
            "{message} shows the data directory"
        );
    }
    let (_, list) = server.get("/v1/jobs").await;
    assert_eq!(list["total"], 0, "{list}");
    let (status, _) = server.get("/v1/jobs/0123").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_found_while_reading_fail_the_job_clearly() {
    let env = env();
    let mut text = format!("id,{}\n", FEATURES.join(","));
    text.push_str("a,5.1,3.5,1.4,0.2\nb,5.0,lots,1.4,0.2\n");
    std::fs::write(env.data.join("words.csv"), text).unwrap();
    std::fs::write(
        env.data.join("empty.csv"),
        format!("id,{}\n", FEATURES.join(",")),
    )
    .unwrap();
    std::fs::write(env.data.join("short.csv"), "id,sepal_length\n1,2\n").unwrap();
    let server = TestServer::start_with(settings(&env)).await;
    // A quote left open in a record's first cell runs to the end of the file.
    std::fs::write(
        env.data.join("open.csv"),
        format!(
            "id,{}\na,5.1,3.5,1.4,0.2\n\"b,5.1,3.5,1.4,0.2\nc,4.9,3.0,1.4,0.2\n",
            FEATURES.join(",")
        ),
    )
    .unwrap();
    // A JSON line giving a key twice (its first value was dropped).
    std::fs::write(
        env.data.join("twice.jsonl"),
        "{\"id\": 1, \"sepal_length\": 5.1, \"sepal_width\": 3.5, \"petal_length\": 1.4, \"petal_width\": 0.2}\n\
         {\"id\": 2, \"sepal_length\": 5.1, \"sepal_width\": 3.5, \"petal_length\": 1.4, \"petal_width\": 0.2, \"sepal_width\": 9}\n",
    )
    .unwrap();
    let cases = [
        ("words.csv", "\"lots\" is not a number"),
        ("empty.csv", "empty data"),
        ("short.csv", "sepal_width"),
        (
            "open.csv",
            "\"open.csv\": line 3: a quoted cell is not closed before the end of the file",
        ),
        (
            "twice.jsonl",
            "\"twice.jsonl\" line 2: key \"sepal_width\" appears twice",
        ),
    ];
    for (file, expected) in cases {
        let id = submit(
            &server,
            score_spec(json!({"path": file}), json!({"path": "out.csv"}), 8),
        )
        .await;
        let job = finished(&server, &id).await;
        assert_eq!(job["state"], "failed", "{job}");
        let error = job["error"].as_str().unwrap();
        assert!(error.contains(expected), "{file}: {error}");
        assert!(!env.data.join("out.csv").exists(), "{file}");
    }
    // A column named twice is refused, naming it (the second was never read).
    std::fs::write(
        env.data.join("dup.csv"),
        format!(
            "id,{},sepal_length\n1,5.1,3.5,1.4,0.2,9\n",
            FEATURES.join(",")
        ),
    )
    .unwrap();
    let (status, answer) = server
        .post_json(
            "/v1/jobs",
            &score_spec(json!({"path": "dup.csv"}), json!({"path": "out.csv"}), 8),
        )
        .await;
    let message = match status {
        400 => answer["error"].as_str().unwrap().to_string(),
        _ => {
            let job = finished(&server, answer["job_id"].as_str().unwrap()).await;
            assert_eq!(job["state"], "failed", "{job}");
            job["error"].as_str().unwrap().to_string()
        }
    };
    assert!(
        message.contains("two columns named \"sepal_length\""),
        "{message}"
    );
    // An SQL error (SQLite here) fails the job with the database's words.
    std::fs::write(env.data.join("words.db"), b"").unwrap();
    let id = submit(
        &server,
        score_spec(
            json!({"url": "sqlite://words.db", "query": "SELECT * FROM missing"}),
            json!({"path": "out.csv"}),
            8,
        ),
    )
    .await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("no such table"),
        "{job}"
    );
    // The database file must exist for a source.
    let (status, answer) = server
        .post_json(
            "/v1/jobs",
            &score_spec(
                json!({"url": "sqlite://nothing.db", "query": "SELECT 1"}),
                json!({"path": "out.csv"}),
                8,
            ),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    server.stop().await;
}

/// `/train/` fields that name one thing (`model` and `modelName`, `folds` and
/// `numFolds`) must agree, as the algorithm's parameters must: the one that came
/// last won silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_train_fields_that_disagree_are_a_400_naming_both() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let schema = json!({"label": {"key": "y"}, "features": [{"key": "age"}]});
    for (fields, words) in [
        (
            json!({"model": "old2", "modelName": "old1"}),
            "modelName: \"old1\" conflicts with model = \"old2\"",
        ),
        (
            json!({"folds": 3, "numFolds": 4}),
            "numFolds: 4 conflicts with folds = 3",
        ),
    ] {
        let mut job = json!({"schema": schema, "inputCollection": "bank.csv"});
        job.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let (status, answer) = server.post_json("/train/", &job).await;
        assert_error(status, &answer, 400, words);
    }
    server.stop().await;
}
