//! Uploads: what they serve, what they refuse, and the calls they race with.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_serves_the_new_version_at_once() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;

    // model_id defaults to the file name without extension, version to 1.
    let (code, body) = server
        .upload(&[], "iris.onnx", example_onnx("iris_lr"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (body["model_id"].clone(), body["version"].clone()),
        (json!("iris"), json!(1))
    );
    assert_eq!(body["model"]["served_versions"], json!([1]), "{body}");
    // Read while the upload held the model, but not "busy" on its account.
    assert_eq!(body["model"]["busy"], false, "{body}");
    let (code, answer) = predict_version(&server, "iris").await;
    assert_eq!(
        (code, answer["version"].clone()),
        (200, json!(1)),
        "{answer}"
    );

    // The next upload is the next version, and is what "latest" serves now.
    let (code, body) = server
        .upload(&[("model_id", "iris")], "dt.onnx", example_onnx("iris_dt"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 2);
    let (_, answer) = predict_version(&server, "iris").await;
    assert_eq!(answer["version"], 2, "{answer}");

    // An existing version is a conflict and changes nothing.
    let (code, body) = server
        .upload(
            &[("model_id", "iris"), ("version", "2")],
            "x.onnx",
            example_onnx("iris_lr"),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        std::fs::read(repo.path().join("iris/2/model.onnx")).unwrap(),
        example_onnx("iris_dt")
    );
    // An explicit version works.
    let (code, body) = server
        .upload(
            &[("model_id", "iris"), ("version", "10")],
            "x.onnx",
            example_onnx("iris_lr"),
        )
        .await;
    assert_eq!((code, body["version"].clone()), (200, json!(10)), "{body}");
    assert_eq!(
        tree(repo.path()),
        vec![
            "iris/",
            "iris/1/",
            "iris/1/model.onnx",
            "iris/10/",
            "iris/10/model.onnx",
            "iris/2/",
            "iris/2/model.onnx"
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_leave_nothing_behind() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let mut settings = unwatched_settings(repo.path());
    settings.max_upload_bytes = 64 * 1024;
    let server = TestServer::start_with(settings).await;
    let before = tree(repo.path());

    for bad in ["../x", "", "a/b", ".", "..", ".hidden", "a b"] {
        let (code, body) = server
            .upload(&[("model_id", bad)], "m.onnx", example_onnx("iris_lr"))
            .await;
        assert_eq!(code, 400, "{bad:?}: {body}");
        assert!(error_text(&body).contains("model_id"), "{bad:?}: {body}");
    }
    let (code, body) = server
        .upload(&[("version", "0")], "iris.onnx", example_onnx("iris_lr"))
        .await;
    assert_eq!(code, 400, "{body}");
    // Any file name is accepted; content that is no model is refused.
    let (code, body) = server
        .upload(&[], "iris.txt", b"sepal,petal\n5.1,3.5\n".to_vec())
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(error_text(&body).contains("ONNX"), "{body}");

    // Too large: 413.
    let (code, body) = server
        .upload(&[("model_id", "big")], "big.onnx", vec![7u8; 200 * 1024])
        .await;
    assert_eq!(code, 413, "{body}");
    assert!(error_text(&body).contains("limit"), "{body}");

    // Not a model: 400, and the version that serves is untouched.
    let (code, body) = server
        .upload(&[("model_id", "iris")], "iris.onnx", b"garbage".to_vec())
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(error_text(&body).contains("not a model"), "{body}");
    let (code, body) = server
        .upload(&[("model_id", "new")], "new.onnx", b"garbage".to_vec())
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = server.upload(&[], "empty.onnx", Vec::new()).await;
    assert_eq!(code, 400, "{body}");
    let (code, answer) = predict_version(&server, "iris").await;
    assert_eq!((code, answer["version"].clone()), (200, json!(1)));

    // Not multipart at all (a 415 naming multipart, the only type it takes), no
    // file, fields after the file.
    let (code, body) = server.post_json("/upload_model", &json!({})).await;
    assert_eq!(code, 415, "{body}");
    assert!(error_text(&body).contains("multipart/form-data"), "{body}");
    let form = reqwest::multipart::Form::new().text("model_id", "x");
    let r = server
        .client
        .post(server.url("/upload_model"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(example_onnx("iris_lr")).file_name("late.onnx"),
        )
        .text("model_id", "late");
    let r = server
        .client
        .post(server.url("/upload_model"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A field given twice (the last one named the model), an empty one too.
    for (field, first) in [("model_id", "twice"), ("version", "7"), ("version", "")] {
        let value = if field == "version" { "7" } else { "twice" };
        let form = reqwest::multipart::Form::new()
            .text(field, first)
            .text(field, value)
            .part(
                "file",
                reqwest::multipart::Part::bytes(example_onnx("iris_lr")).file_name("twice.onnx"),
            );
        let r = server
            .client
            .post(server.url("/upload_model"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{field}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("is given twice"),
            "{body}"
        );
    }

    assert_eq!(
        tree(repo.path()),
        before,
        "nothing partial or stray is left"
    );

    // A file name that is a path does not become one: only its stem names the model.
    let (code, body) = server
        .upload(&[], "../../evil.onnx", example_onnx("iris_lr"))
        .await;
    assert_eq!(
        (code, body["model_id"].clone()),
        (200, json!("evil")),
        "{body}"
    );
    assert!(repo.path().join("evil/1/model.onnx").is_file());
    assert!(!repo.path().parent().unwrap().join("evil").exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_to_one_model_are_serialised() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(Settings {
        // The watcher on: it must not pick up a staging directory either.
        file_system_poll_wait: Duration::from_millis(20),
        ..test_settings(repo.path())
    })
    .await;
    let uploads = (0..4).map(|i| {
        let model = if i % 2 == 0 { "iris_lr" } else { "iris_dt" };
        server.upload(&[("model_id", "m")], "m.onnx", example_onnx(model))
    });
    let results = futures::future::join_all(uploads).await;
    let mut versions: Vec<u64> = results
        .iter()
        .map(|(code, body)| {
            assert_eq!(*code, 200, "{body}");
            body["version"].as_u64().unwrap()
        })
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        vec![1, 2, 3, 4],
        "each upload got its own version"
    );
    // Every stored file is whole, and no staging directory is left.
    for v in 1..=4u64 {
        let stored = std::fs::read(repo.path().join(format!("m/{v}/model.onnx"))).unwrap();
        assert!(
            stored == example_onnx("iris_lr") || stored == example_onnx("iris_dt"),
            "version {v} is partial"
        );
    }
    assert!(
        tree(repo.path()).iter().all(|p| !p.contains(".tmp")),
        "{:?}",
        tree(repo.path())
    );
    let (_, answer) = predict_version(&server, "m").await;
    assert_eq!(answer["version"], 4);
    server.stop().await;
}

/// A model folder that holds only an upload's staging (an upload in progress) is
/// no model yet: a deploy of it is 404 and records nothing, neither in memory nor
/// in the store (a deployment recorded there would come back after a restart, or
/// apply to the model once uploaded), and a reload of it says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_of_a_folder_with_only_an_upload_in_progress_is_404_and_records_nothing() {
    // Deployed in this process (tests/management_races.rs checks the 404s of
    // deployments into worker processes).
    let settings = |repo: &Path| Settings {
        worker_ports: None,
        ..unwatched_settings(repo)
    };
    let repo = tempfile::tempdir().unwrap();
    let staging = repo.path().join("m/.tmp-upload-1");
    let server = TestServer::start_with(settings(repo.path())).await;
    // Made after the start, which clears staging left by an earlier process.
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), b"half").unwrap();
    let deploy = json!({"model_id": "m", "resources": {"timeout": 5}});
    let (code, body) = server.post_json("/deploy", &deploy).await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("only an upload in progress"),
        "{body}"
    );
    let (code, body) = server
        .request(reqwest::Method::POST, "/reload_model?modelname=m")
        .await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("only an upload in progress"),
        "no config list is in force: {body}"
    );

    // The upload lands: the model serves, with no deployment.
    std::fs::remove_dir_all(&staging).unwrap();
    install_model(
        repo.path(),
        "m",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let (code, body) = server
        .request(reqwest::Method::POST, "/reload_model?modelname=m")
        .await;
    assert_eq!(code, 200, "{body}");
    let m = status_of(&server, "m").await.unwrap();
    assert!(m["deployment"].is_null(), "{m}");
    server.stop().await;
    // Nor after a restart on the same store.
    let server = TestServer::start_with(settings(repo.path())).await;
    let m = status_of(&server, "m").await.unwrap();
    assert!(m["deployment"].is_null(), "{m}");
    assert_eq!(predict_version(&server, "m").await.0, 200);
    server.stop().await;
}

/// A delete of a model while an upload to it streams: the delete moves the model's
/// folder, the upload's staging directory with it. The delete wins; the upload
/// answers 409 and stores nothing (it answered 500 "cannot read the staging file"
/// when schemathesis sent the two side by side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_during_an_upload_wins_and_the_upload_answers_409() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    assert!(status_of(&server, "iris").await.is_some());

    let boundary = "ferroserve-test-boundary";
    let fields = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\niris\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"dt.onnx\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let end = format!("\r\n--{boundary}--\r\n");
    let model = example_onnx("iris_dt");
    let (first, second) = model.split_at(model.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(server.rest_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /upload_model HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        server.rest_addr,
        fields.len() + model.len() + end.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(fields.as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();

    // The first half is in the upload's staging directory inside the model's folder.
    let staged = |repo: &Path| {
        std::fs::read_dir(repo.join("iris"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-upload-"))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !staged(repo.path()) {
        assert!(Instant::now() < deadline, "the upload never began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, body) = server
        .request(reqwest::Method::DELETE, "/delete_model/iris")
        .await;
    assert_eq!(code, 200, "{body}");

    stream.write_all(second).await.unwrap();
    stream.write_all(end.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 409"), "{answer}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert!(
        error_text(&body).contains("was deleted while this upload was in progress"),
        "{body}"
    );

    // Nothing was stored: no model, no staging, no trash.
    assert_eq!(tree(repo.path()), Vec::<String>::new());
    assert!(status_of(&server, "iris").await.is_none());
    // And the model can be uploaded again.
    let (code, body) = server
        .upload(&[("model_id", "iris")], "dt.onnx", example_onnx("iris_dt"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 1, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scikit_learn_files_can_be_uploaded_too() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    let joblib = std::fs::read(root_path("examples/models/iris_sklearn/1/model.joblib")).unwrap();
    let (code, body) = server
        .upload(&[("model_id", "sk")], "iris.joblib", joblib)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["model"]["versions"][0]["format"], "sklearn", "{body}");
    assert!(repo.path().join("sk/1/model.joblib").is_file());
    let (code, answer) = predict_version(&server, "sk").await;
    assert_eq!(
        (code, answer["version"].clone()),
        (200, json!(1)),
        "{answer}"
    );
    // A pickle that is not a model is refused like any invalid artifact.
    let (code, body) = server
        .upload(&[("model_id", "sk")], "x.pkl", b"\x80\x04N.".to_vec())
        .await;
    assert_eq!(code, 400, "{body}");
    server.stop().await;
}

/// An upload to a stopped model stores the version and leaves the model stopped, as
/// the store keeps it (it used to start the model until the next restart stopped it
/// again); a reload then serves the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_to_a_stopped_model_stores_it_and_the_model_stays_stopped() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "m",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    let (code, body) = server
        .request(reqwest::Method::POST, "/stop_deployment/m")
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = server
        .upload(&[("model_id", "m")], "dt.onnx", example_onnx("iris_dt"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 2, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("stopped"),
        "{body}"
    );
    assert_eq!(body["model"]["stopped"], true, "{body}");
    assert!(repo.path().join("m/2/model.onnx").is_file());
    assert_eq!(predict_version(&server, "m").await.0, 404);
    server.stop().await;

    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    assert_eq!(
        predict_version(&server, "m").await.0,
        404,
        "stopped after a restart"
    );
    let (code, body) = server
        .request(reqwest::Method::POST, "/reload_model?modelname=m")
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, answer) = predict_version(&server, "m").await;
    assert_eq!(
        (code, answer["version"].clone()),
        (200, json!(2)),
        "{answer}"
    );
    server.stop().await;
}

/// With a model config list in force, an upload of a model the list does not name
/// would never be served: it is refused with 409 before anything is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_of_a_model_outside_the_config_list_is_409_and_stores_nothing() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("models.toml");
    let base = repo.path().join("iris");
    std::fs::write(
        &config,
        format!(
            "[[models]]\nname = \"iris\"\nbase_path = {:?}\n",
            base.display().to_string()
        ),
    )
    .unwrap();
    let settings = Settings {
        model_config_file: Some(config),
        ..unwatched_settings(repo.path())
    };
    let server = TestServer::start_with(settings).await;
    let before = tree(repo.path());
    for fields in [
        &[("model_id", "newm")][..],
        &[("model_id", "newm"), ("version", "1")],
    ] {
        let (code, body) = server
            .upload(fields, "m.onnx", example_onnx("iris_lr"))
            .await;
        assert_eq!(code, 409, "{body}");
        assert!(error_text(&body).contains("model config list"), "{body}");
    }
    assert_eq!(tree(repo.path()), before);
    // A model of the list still takes uploads.
    let (code, body) = server
        .upload(&[("model_id", "iris")], "m.onnx", example_onnx("iris_dt"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 2, "{body}");
    server.stop().await;
}

/// An upload of the iris model as `m` with `assets`, each given by the whole
/// file name parameter of its part (`filename="labels.txt"`), so that the test
/// controls the bytes sent.
async fn upload_with_raw_asset_names(server: &TestServer, assets: &[&str]) -> (u16, Value) {
    let boundary = "ferroserve-asset-names";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\nm\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
         filename=\"model.onnx\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&example_onnx("iris_lr"));
    for (i, filename) in assets.iter().enumerate() {
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"asset\"; \
                 {filename}\r\nContent-Type: text/plain\r\n\r\nasset {i}\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = server
        .client
        .post(server.url("/upload_model"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    common::status_and_body(r).await
}

/// Assets are stored under their own names or not at all: a name that would have
/// to be rewritten (it was, silently: `labels (1).txt` became `labels__1_.txt`,
/// `a b.txt` and `a:b.txt` both `a_b.txt`, a long name was cut and lost its
/// extension) is a 400 that names it and the rule, and stores nothing. A name
/// that is a path keeps only its last component: nothing lands outside the
/// version directory. The answer lists the files stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asset_names_are_stored_as_given_or_refused() {
    let outer = tempfile::tempdir().unwrap();
    let repo = outer.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let server = TestServer::start_with(unwatched_settings(&repo)).await;

    let longest = format!("{}.txt", "n".repeat(196));
    let (code, body) = upload_with_raw_asset_names(
        &server,
        &[
            "filename=\"labels-1_v2.txt\"",
            &format!("filename=\"{longest}\""),
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["files"],
        json!(["model.onnx", "labels-1_v2.txt", longest]),
        "{body}"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("m/1/labels-1_v2.txt")).unwrap(),
        "asset 0\n"
    );
    assert!(repo.join("m/1").join(&longest).is_file());
    let before = tree(&repo);

    let too_long = format!("{}.txt", "n".repeat(296));
    for (name, words) in [
        ("labels (1).txt", "' ', '(', ')'"),
        ("ünï.txt", "'ü', 'ï'"),
        ("a:b.txt", "':'"),
        ("a b.txt", "' '"),
        (&too_long, "300 characters long"),
        // A percent-encoded path is not decoded, nor stored under a new name.
        ("%2e%2e%2fescaped.txt", "'%'"),
    ] {
        let (code, body) =
            upload_with_raw_asset_names(&server, &[&format!("filename=\"{name}\"")]).await;
        assert_eq!(code, 400, "{name}: {body}");
        let message = error_text(&body);
        for w in [
            name,
            words,
            "ASCII letters, digits, '.', '_' and '-'",
            "200",
        ] {
            assert!(message.contains(w), "{name}: {w:?} not in {message}");
        }
        assert_eq!(tree(&repo), before, "{name}: nothing stored");
    }
    // `filename*` (RFC 5987) is not read: the part has no name, and says so.
    let (code, body) =
        upload_with_raw_asset_names(&server, &["filename*=UTF-8''..%2Fstar.txt"]).await;
    assert_eq!(code, 400, "{body}");
    assert!(error_text(&body).contains("needs a file name"), "{body}");
    assert_eq!(tree(&repo), before);

    // Paths: only the last component is the name, inside the version directory.
    let (code, body) = upload_with_raw_asset_names(
        &server,
        &[
            "filename=\"../up.txt\"",
            "filename=\"../../../root.txt\"",
            "filename=\"/etc/absolute.txt\"",
            "filename=\"..\\\\..\\\\back.txt\"",
            "filename=\"C:\\\\data\\\\windows.txt\"",
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let stored = [
        "up.txt",
        "root.txt",
        "absolute.txt",
        "back.txt",
        "windows.txt",
    ];
    let mut files = vec!["model.onnx"];
    files.extend(stored);
    assert_eq!(body["files"], json!(files), "{body}");
    for name in stored {
        assert!(repo.join("m/2").join(name).is_file(), "{name}");
    }
    // Nothing outside the model's version directories (but the server's state).
    let outside: Vec<String> = tree(outer.path())
        .into_iter()
        .filter(|p| {
            !["repo/", "repo/m/", "repo/m/1/", "repo/m/2/"].contains(&p.as_str())
                && !p.starts_with("repo/.ferroserve/")
                && !p.starts_with("repo/m/1/")
                && !p.starts_with("repo/m/2/")
        })
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
    server.stop().await;
}
