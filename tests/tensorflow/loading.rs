//! Loading SavedModels: broken ones, FIFOs and links in them, thread settings, no
//! library, and a new version under load.

use super::*;

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
