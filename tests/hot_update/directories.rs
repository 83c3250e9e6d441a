//! Version directories: one still being written is neither loaded nor a
//! replacement for a served version, a version serves from the directory that names
//! it now, and one in error whose directory goes leaves the status.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_directory_still_being_written_is_not_loaded() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "m", 1, &model_file(1));
    let settings = Settings {
        // Slow polls, fast writes: the writer changes the file many times per poll.
        file_system_poll_wait: Duration::from_millis(200),
        ..test_settings(repo.path())
    };
    let server = TestServer::start_with(settings).await;
    let bytes = std::fs::read(model_file(2)).unwrap();
    let dir = repo.path().join("m/2");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.onnx");
    // Written in 40 pieces over about a second, as a slow copy would.
    let pieces: Vec<&[u8]> = bytes.chunks(bytes.len().div_ceil(40)).collect();
    for piece in pieces {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(piece).unwrap();
        drop(f);
        let m = model_status(&server, "m").await.unwrap();
        assert_eq!(
            version_state(&m, 2),
            None,
            "a half-written version was picked up: {m}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Complete now: it settles on the next polls and replaces version 1.
    eventually_some("the complete version 2", Duration::from_secs(20), || {
        let server = &server;
        async move { (served_versions(server, "m").await == vec![2]).then_some(()) }
    })
    .await;
    server.stop().await;
}

/// Puts a version directory named `dir` (`2`, `0002`) in place with `artifact`,
/// atomically: copied into a hidden staging directory, then renamed.
fn put_version_dir(repo: &Path, model: &str, dir: &str, artifact: &Path) {
    let staging = repo.join(model).join(format!(".tmp-copy-{dir}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(artifact, staging.join("model.onnx")).unwrap();
    std::fs::rename(&staging, repo.join(model).join(dir)).unwrap();
}

/// Was: where a second directory came to name a served version (`2/` beside the
/// `0000…0002/` it was loaded from), the log said `2/` was the one served, but the
/// version kept answering from the old directory, even once that was deleted, until
/// an explicit reload (and a restart would have answered differently). Now the
/// version is loaded again from the directory the repository names, once it has
/// settled, and swapped in under load without a failed request; the same when the
/// directory it serves from goes while another (`02/`) names the version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_serves_from_the_directory_that_names_it_now() {
    let repo = tempfile::tempdir().unwrap();
    let padded = "00000000000000000000000000000002";
    put_version_dir(repo.path(), "f", padded, &model_file(2)); // iris_dt
    let server = TestServer::start_with(watched(repo.path())).await;
    // A row the two models answer differently.
    let row = json!({"instances": [[5.9, 3.0, 4.2, 1.5]]});
    let predict = || {
        let (server, row) = (&server, &row);
        async move {
            let (code, body) = server
                .post_json("/v1/models/f/versions/2:predict", row)
                .await;
            assert_eq!(code, 200, "{body}");
            body["predictions"].clone()
        }
    };
    let from_dt = predict().await;
    let url = server.url("/v1/models/f/versions/2:predict");
    let request = row.clone();
    let load = Load::start(2, move |c| c.post(&url).json(&request), |_| Some(2));

    // `2/` (iris_lr) comes beside the padded directory: it serves version 2 now.
    put_version_dir(repo.path(), "f", "2", &model_file(1));
    let from_lr = eventually_some(
        "version 2 to answer from 2/",
        Duration::from_secs(20),
        || {
            let predict = &predict;
            let from_dt = &from_dt;
            async move {
                let now = predict().await;
                (now != *from_dt).then_some(now)
            }
        },
    )
    .await;
    // The padded directory goes and `02/` (iris_dt) comes: `2/` still names the
    // version, so nothing changes.
    std::fs::remove_dir_all(repo.path().join("f").join(padded)).unwrap();
    put_version_dir(repo.path(), "f", "02", &model_file(2));
    let until = Instant::now() + POLL * 8;
    while Instant::now() < until {
        assert_eq!(predict().await, from_lr, "2/ names version 2");
        tokio::time::sleep(POLL / 2).await;
    }
    // `2/` goes while `02/` names the version: it serves from `02/`.
    std::fs::remove_dir_all(repo.path().join("f/2")).unwrap();
    eventually_some(
        "version 2 to answer from 02/",
        Duration::from_secs(20),
        || {
            let predict = &predict;
            let from_dt = &from_dt;
            async move { (predict().await == *from_dt).then_some(()) }
        },
    )
    .await;

    let answers = load.finish().await;
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(failed.is_empty(), "failed during the swaps: {failed:?}");
    assert!(!answers.is_empty(), "the load did not run");
    let status = model_status(&server, "f").await.unwrap();
    assert_eq!(status["served_versions"], json!([2]), "{status}");
    let v2 = status["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == 2)
        .unwrap();
    assert_eq!(v2["state"], "AVAILABLE", "{status}");
    assert!(v2["error"].is_null(), "{status}");
    server.stop().await;
}

/// Was: a version that failed to load stayed ERROR in status and in the V2
/// repository index for good once its directory was removed (monitoring that alerts
/// on ERROR kept firing), where a served version's removal ends it. Now it ends too,
/// with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_in_error_whose_directory_goes_leaves_status() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "h", 1, &model_file(1));
    let server = TestServer::start_with(watched(repo.path())).await;
    std::fs::create_dir_all(repo.path().join("h/3")).unwrap();
    eventually_some("version 3 in ERROR", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "h").await?;
            (version_state(&m, 3).as_deref() == Some("ERROR")).then_some(())
        }
    })
    .await;

    std::fs::remove_dir_all(repo.path().join("h/3")).unwrap();
    let m = eventually_some("version 3 to leave ERROR", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "h").await?;
            (version_state(&m, 3).as_deref() != Some("ERROR")).then_some(m)
        }
    })
    .await;
    let v3 = m["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == 3);
    if let Some(v3) = v3 {
        assert_eq!(v3["state"], "END", "{m}");
        assert!(v3["error"].is_null(), "{m}");
    }
    assert_eq!(m["served_versions"], json!([1]), "{m}");
    let (code, index) = server.post_json("/v2/repository/index", &json!({})).await;
    assert_eq!(code, 200, "{index}");
    for entry in index.as_array().unwrap() {
        assert_ne!(entry["state"], "ERROR", "{index}");
    }
    server.stop().await;
}

/// A directory that comes to name a served version is taken only once its files
/// are unchanged across two polls, as a new version is: one still being written
/// beside the directory the version serves from never replaces it half-written (a
/// failed load of it would leave the version serving the old files for good, since
/// nothing would change in the directory once the copy ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_still_being_written_does_not_replace_a_served_version() {
    let repo = tempfile::tempdir().unwrap();
    put_version_dir(repo.path(), "f", "0002", &model_file(2)); // iris_dt
    let server = TestServer::start_with(Settings {
        // Slow polls, fast writes: the writer changes the file many times per poll.
        file_system_poll_wait: Duration::from_millis(200),
        ..test_settings(repo.path())
    })
    .await;
    let row = json!({"instances": [[5.9, 3.0, 4.2, 1.5]]});
    let predict = || {
        let (server, row) = (&server, &row);
        async move {
            let (code, body) = server
                .post_json("/v1/models/f/versions/2:predict", row)
                .await;
            assert_eq!(code, 200, "{body}");
            body["predictions"].clone()
        }
    };
    let from_dt = predict().await;
    let bytes = std::fs::read(model_file(1)).unwrap(); // iris_lr
    let dir = repo.path().join("f/2");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.onnx");
    // Written in 40 pieces over about a second, as a slow copy would.
    for piece in bytes.chunks(bytes.len().div_ceil(40)) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(piece).unwrap();
        drop(f);
        let m = model_status(&server, "f").await.unwrap();
        assert_eq!(version_state(&m, 2).as_deref(), Some("AVAILABLE"), "{m}");
        assert!(
            m["versions"][0]["error"].is_null(),
            "half-written, tried: {m}"
        );
        assert_eq!(predict().await, from_dt, "half-written, served");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Complete now: it settles on the next polls and serves version 2.
    eventually_some(
        "version 2 to answer from 2/",
        Duration::from_secs(20),
        || {
            let predict = &predict;
            let from_dt = &from_dt;
            async move { (predict().await != *from_dt).then_some(()) }
        },
    )
    .await;
    let m = model_status(&server, "f").await.unwrap();
    assert!(m["versions"][0]["error"].is_null(), "{m}");
    server.stop().await;
}
