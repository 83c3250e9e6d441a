//! The commands end to end: models, upload, predict and status with their exit
//! codes, a closed output, tokens (`token new`, `--token`), and `serve --pid-file`
//! with `stop --pid-file`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_upload_predict_and_status_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(test_settings(&repo(dir.path()))).await;
    let url = server.base.clone();

    // status: health and every model.
    let (code, out) = run(cli(&url, &["status"])).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ready true") && out.contains("iris") && out.contains("AVAILABLE"),
        "{out}"
    );
    let (code, out) = run(cli(&url, &["models", "list", "--output", "json"])).await;
    assert_eq!(code, 0, "{out}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert!(list["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["model_id"] == "iris"));

    // upload with a progress bar (hidden here: stderr is not a terminal).
    let (code, out) = run(cli(
        &url,
        &[
            "upload",
            &root_path("examples/models/iris_lr/1/model.onnx")
                .display()
                .to_string(),
            "--model",
            "iris_onnx",
        ],
    ))
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("model iris_onnx version 1"), "{out}");
    // The version goes as written: the server refuses "05" as it does over the API
    // (the client read it as 5 and created version 5).
    let (code, out) = run(cli(
        &url,
        &[
            "upload",
            &root_path("examples/models/iris_lr/1/model.onnx")
                .display()
                .to_string(),
            "--model",
            "iris_onnx",
            "--version",
            "05",
        ],
    ))
    .await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("05"), "{out}");
    let (code, out) = run(cli(&url, &["models", "status", "iris_onnx"])).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("AVAILABLE"), "{out}");

    // predict from CSV and from JSON lines: scikit-learn's labels, row by row.
    let (rows, labels) = iris_expected();
    let mut csv = format!("{}\n", FEATURES.join(","));
    let mut jsonl = String::new();
    for r in &rows {
        csv.push_str(
            &r.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        csv.push('\n');
        jsonl.push_str(&serde_json::to_string(r).unwrap());
        jsonl.push('\n');
    }
    std::fs::write(dir.path().join("rows.csv"), csv).unwrap();
    std::fs::write(dir.path().join("rows.jsonl"), jsonl).unwrap();
    for input in ["rows.csv", "rows.jsonl"] {
        let output = dir.path().join(format!("{input}.out"));
        let (code, out) = run(cli(
            &url,
            &[
                "predict",
                "iris",
                "--input",
                &dir.path().join(input).display().to_string(),
                "--output",
                &output.display().to_string(),
                "--batch-size",
                "4",
            ],
        ))
        .await;
        assert_eq!(code, 0, "{out}");
        let got: Vec<String> = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["prediction"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(got, labels, "{input}");
    }
    // `predict MODEL --input rows.csv --output OUTPUT`: its exit code and output.
    let rows_csv = dir.path().join("rows.csv").display().to_string();
    let predict_into = |model: &'static str, output: String| {
        let c = cli(
            &url,
            &["predict", model, "--input", &rows_csv, "--output", &output],
        );
        run(c)
    };
    // A failed predict (an unknown model) leaves an existing output file whole,
    // and no temporary file beside it.
    let output = dir.path().join("rows.csv.out");
    let before = std::fs::read_to_string(&output).unwrap();
    let (code, out) = predict_into("no_such_model", output.display().to_string()).await;
    assert_eq!(code, 4, "{out}");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A file replaced keeps its permissions (a 600 output became 644).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (code, out) = predict_into("iris", output.display().to_string()).await;
        assert_eq!(code, 0, "{out}");
        let mode = std::fs::metadata(&output).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
    // An output that is no plain file (here the standard output's device) is
    // written in place.
    let (code, out) = predict_into("iris", "/dev/stdout".to_string()).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"prediction\""), "{out}");
    // Through a link to a file, a failed predict leaves the file whole too, and
    // the link stays a link.
    let target = dir.path().join("target.jsonl");
    let link = dir.path().join("link.jsonl");
    std::fs::write(&target, "ORIGINAL\n").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (code, out) = predict_into("no_such_model", link.display().to_string()).await;
    assert_eq!(code, 4, "{out}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "ORIGINAL\n");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    // ... and a successful one replaces the link's target.
    let (code, out) = predict_into("iris", link.display().to_string()).await;
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::read_to_string(&target)
        .unwrap()
        .contains("\"prediction\""));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    // `.` and `..` are no names: a usage error, found before anything is sent.
    let (code, out) = run(cli(&url, &["models", "load", ".."])).await;
    assert_eq!(code, 2, "{out}");
    // A directory is no model file: exit 1 (the server was never asked).
    let (code, out) = run(cli(
        &url,
        &["upload", &dir.path().display().to_string(), "--model", "x"],
    ))
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not a file"), "{out}");

    // unload, load, delete (which needs --yes without a terminal).
    let (code, out) = run(cli(&url, &["models", "unload", "iris_onnx"])).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(cli(&url, &["models", "load", "iris_onnx"])).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(cli(&url, &["models", "delete", "iris_onnx"])).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--yes"), "{out}");
    // A name is one name: a `/`, `..`, `#` or `?` in it reaches no other model or
    // route (`nope/../iris_onnx` was a delete of iris_onnx, `iris_onnx/unload#` a
    // "load" that unloaded it).
    for args in [
        &["models", "delete", "nope/../iris_onnx", "--yes"][..],
        &["models", "delete", "iris_onnx#", "--yes"],
        &["models", "load", "iris_onnx/unload#"],
        &["models", "unload", "nope/../iris_onnx"],
        &["jobs", "status", "../../models/status"],
    ] {
        let (code, out) = run(cli(&url, args)).await;
        assert_eq!(code, 4, "{args:?}: {out}");
    }
    let (code, out) = run(cli(&url, &["models", "status", "iris_onnx"])).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("AVAILABLE"), "{out}");
    let (code, out) = run(cli(&url, &["models", "delete", "iris_onnx", "--yes"])).await;
    assert_eq!(code, 0, "{out}");
    assert!(!dir.path().join("models/iris_onnx").exists());

    // Exit codes: usage 2, rejected 4, server failure 5, unreachable 3.
    let (code, _) = run(cli(&url, &["models", "frobnicate"])).await;
    assert_eq!(code, 2);
    let (code, out) = run(cli("notaurl", &["status"])).await;
    assert_eq!(code, 2, "a server that is no URL is a usage error: {out}");
    assert!(out.contains("is no URL"), "{out}");
    // So are arguments no request can carry, found before anything is sent (a
    // token with a line break was "cannot reach the server", 3; the others 1).
    let rows = dir.path().join("rows.csv").display().to_string();
    for args in [
        &["models", "list", "--token", "a\nb"][..],
        &["jobs", "status", ".."],
        &["predict", "iris", "--input", &rows, "--batch-size", "0"],
    ] {
        let (code, out) = run(cli(&url, args)).await;
        assert_eq!(code, 2, "{args:?}: {out}");
    }
    let (code, out) = run(cli(&url, &["models", "status", "nope"])).await;
    assert_eq!(code, 4, "{out}");
    let (code, out) = run(cli(
        &url,
        &[
            "predict",
            "nope",
            "--input",
            &dir.path().join("rows.jsonl").display().to_string(),
        ],
    ))
    .await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("404"), "{out}");
    let (code, out) = run(cli(
        &url,
        &[
            "predict",
            "broken",
            "--input",
            &dir.path().join("rows.jsonl").display().to_string(),
        ],
    ))
    .await;
    assert_eq!(code, 5, "{out}");
    let (code, out) = run(cli(
        &format!("http://127.0.0.1:{}", free_port()),
        &["status"],
    ))
    .await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("cannot reach"), "{out}");
    // A password in --server stays out of the message (it was shown whole).
    let (code, out) = run(cli(
        &format!("http://user:secretpw@127.0.0.1:{}", free_port()),
        &["status"],
    ))
    .await;
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("cannot reach") && out.contains("user:***@") && !out.contains("secretpw"),
        "{out}"
    );
    server.stop().await;
}

/// A command whose standard output is closed (`ferroserve jobs list | head -1`
/// once `head` has exited) ends quietly with 0, as other command-line tools do;
/// so does one whose standard error is closed too (`2>&1 | head -1`). Every
/// command panicked there ("failed printing to stdout: Broken pipe", exit 101).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_output_ends_every_command_quietly() {
    use common::jobs::{finished, submit, FEATURES};
    let env = common::jobs::env();
    std::fs::write(
        env.data.join("in.csv"),
        format!("id,{}\nr1,5.1,3.5,1.4,0.2\n", FEATURES.join(",")),
    )
    .unwrap();
    let server = TestServer::start_with(common::jobs::settings(&env)).await;
    let id = submit(
        &server,
        serde_json::json!({"kind": "score", "spec": {
            "model": "iris", "version": "latest",
            "source": {"path": "in.csv"}, "sink": {"path": "out.csv"},
            "carry": ["id"], "batch_size": 8,
        }}),
    )
    .await;
    finished(&server, &id).await;
    let rows = env.data.join("rows.jsonl");
    std::fs::write(&rows, "[5.1, 3.5, 1.4, 0.2]\n").unwrap();
    let rows = rows.display().to_string();
    let model = root_path("examples/models/iris_lr/1/model.onnx")
        .display()
        .to_string();
    // (the command, whether its standard error is closed too)
    for (args, stderr_closed) in [
        (vec!["jobs", "list"], false),
        (vec!["jobs", "list"], true),
        (vec!["jobs", "status", &id], false),
        (vec!["status"], false),
        (vec!["status", "--output", "json"], false),
        (vec!["models", "list"], false),
        (vec!["models", "status", "iris"], false),
        (vec!["models", "load", "iris"], true),
        (vec!["predict", "iris", "--input", &rows], false),
        (vec!["upload", &model, "--model", "uploaded"], false),
        (
            vec!["token", "new", "--name", "ci", "--scopes", "inference"],
            false,
        ),
    ] {
        let mut command = match args[0] {
            "token" => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
                c.args(&args);
                c
            }
            _ => cli(&server.base, &args),
        };
        // A pipe nobody reads: every write to it is a broken pipe.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        if stderr_closed {
            command.stderr(writer.try_clone().unwrap());
        }
        command.stdout(writer).stdin(std::process::Stdio::null());
        let out = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
    server.stop().await;
}

#[test]
fn token_new_refuses_a_bad_name_or_scope_as_a_usage_error() {
    // (the arguments, what the error says) — each was exit 1 with an `Error:` line.
    for (args, says) in [
        (
            &["--name", "", "--scopes", "inference"][..],
            "1 to 64 printable ASCII",
        ),
        (
            &["--name", "caf\u{e9}", "--scopes", "inference"][..],
            "1 to 64 printable ASCII",
        ),
        (
            &["--name", "ci", "--scopes", "inference,admin"][..],
            "unknown scope \"admin\"",
        ),
        (&["--name", "ci", "--scopes", ","][..], "unknown scope \"\""),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
            .args(["token", "new"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("--help"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: no token is printed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let (token, entry) = ferroserve::auth::new_token(
        "cli",
        &[
            ferroserve::auth::Scope::Inference,
            ferroserve::auth::Scope::Management,
        ],
    )
    .unwrap();
    std::fs::write(dir.path().join("tokens.toml"), entry).unwrap();
    let server = TestServer::start_with(Settings {
        auth_tokens: Some(dir.path().join("tokens.toml")),
        ..test_settings(&repo)
    })
    .await;
    let url = server.base.clone();
    // Management without a token is refused by the server: exit 4.
    let (code, out) = run(cli(&url, &["models", "unload", "iris"])).await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("401"), "{out}");
    let (code, out) = run(cli(&url, &["models", "unload", "iris", "--token", &token])).await;
    assert_eq!(code, 0, "{out}");
    let mut with_env = cli(&url, &["models", "load", "iris"]);
    with_env.env("FERROSERVE_TOKEN", &token);
    let (code, out) = run(with_env).await;
    assert_eq!(code, 0, "{out}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_writes_its_pid_file_and_stop_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let pid_file = dir.path().join("ferroserve.pid");
    let rest = format!("127.0.0.1:{}", free_port());
    let serve = |rest: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
        c.arg("serve")
            .arg("--model-repository")
            .arg(&repo)
            .args(["--rest-addr", rest])
            .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
            .arg("--pid-file")
            .arg(&pid_file);
        c
    };
    let mut server = ChildServer::start(serve(&rest), rest.parse().unwrap()).await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, server.pid());
    // A second server on the same pid file is refused.
    let (code, out) = run(serve(&format!("127.0.0.1:{}", free_port()))).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("running ferroserve"), "{out}");
    // stop: SIGTERM, drain, exit 0; the file is gone.
    let mut stop = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    stop.arg("stop").arg("--pid-file").arg(&pid_file);
    let waiter = std::thread::spawn(move || {
        let code = server.wait_exit(Duration::from_secs(60));
        (code, server)
    });
    let (code, out) = run(stop).await;
    assert_eq!(code, 0, "{out}");
    let (exit, _server) = waiter.join().unwrap();
    assert_eq!(exit, Some(0));
    assert!(!pid_file.exists());
    // Nothing to stop now: still 0.
    let mut again = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    again.arg("stop").arg("--pid-file").arg(&pid_file);
    let (code, out) = run(again).await;
    assert_eq!(code, 0, "{out}");

    // A server started through a link under another name is a ferroserve server.
    let renamed = dir.path().join("fsrv");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ferroserve"), &renamed).unwrap();
    let rest2 = format!("127.0.0.1:{}", free_port());
    let via_link = serve(&rest2);
    let mut c = Command::new(&renamed);
    c.args(via_link.get_args());
    let mut server = ChildServer::start(c, rest2.parse().unwrap()).await;
    let waiter = std::thread::spawn(move || {
        let code = server.wait_exit(Duration::from_secs(60));
        (code, server)
    });
    let mut stop = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    stop.arg("stop").arg("--pid-file").arg(&pid_file);
    let (code, out) = run(stop).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("stopped"), "{out}");
    let (exit, _server) = waiter.join().unwrap();
    assert_eq!(exit, Some(0));

    // A pid file naming a ferroserve that is no server (a client waiting on its
    // input) makes stop signal nothing, and the file is left to its owner.
    let mut client = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(["predict", "iris", "--input", "-", "--server"])
        .arg(format!("http://{rest}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let other = dir.path().join("client.pid");
    std::fs::write(&other, format!("{}\n", client.id())).unwrap();
    let mut stop = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    stop.arg("stop").arg("--pid-file").arg(&other);
    let (code, out) = run(stop).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("not a running ferroserve server"), "{out}");
    assert!(
        client.try_wait().unwrap().is_none(),
        "the client was signalled"
    );
    assert!(other.exists());
    client.kill().unwrap();
    client.wait().unwrap();
}

/// A model file whose name is not UTF-8 uploads under the name asked for (it was
/// "the file has no name").
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_name_that_is_not_utf8_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(test_settings(&repo(dir.path()))).await;
    let base = server.base.clone();
    use std::os::unix::ffi::OsStrExt;
    let file = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.onnx"));
    std::fs::copy(root_path("examples/models/iris_lr/1/model.onnx"), &file).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    c.arg("upload")
        .arg(&file)
        .args(["--model", "cafe", "--server", &base]);
    let (code, out) = run(c).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("model cafe version 1"), "{out}");
    server.stop().await;
}

/// A server that is live and not ready yet (a model's warm-up holds its first load,
/// so `/healthz` answers 503) is reported with its models' states, which say why,
/// not refused as a server failure (exit 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_a_server_that_is_not_ready_yet() {
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    install_model(
        &repo,
        "slow",
        1,
        &root_path("tests/fixtures/onnx/slow_loop/model.onnx"),
    );
    // A warm-up of a billion loop iterations: far longer than this test.
    std::fs::write(repo.join("slow/1/warmup.json"), r#"[{"n": 1000000000}]"#).unwrap();
    let rest = format!("127.0.0.1:{}", free_port());
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    serve
        .args(["serve", "--model-repository"])
        .arg(&repo)
        .args(["--rest-addr", &rest])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(ort) = common::onnxruntime_path() {
        serve.env("ORT_DYLIB_PATH", ort);
    }
    let _server = KillOnDrop(serve.spawn().unwrap());
    let url = format!("http://{rest}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let health = reqwest::get(format!("{url}/healthz")).await;
        if let Ok(r) = health {
            assert_eq!(r.status(), 503, "the warm-up ended already");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, out) = run(cli(&url, &["status"])).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("live true, ready false"), "{out}");
    assert!(out.contains("slow") && out.contains("LOADING"), "{out}");
    let (code, out) = run(cli(&url, &["status", "--output", "json"])).await;
    assert_eq!(code, 0, "{out}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["health"]["ready"], false, "{answer}");
}
