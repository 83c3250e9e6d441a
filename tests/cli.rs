//! The CLI client (issue 17): `ferroserve models …`, `upload`, `predict`, `status`
//! against a real server on 127.0.0.1:0, each exit code, `--token`; and
//! `serve --pid-file` with `stop --pid-file`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::child::{free_port, run_to_end, ChildServer};
use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use serde_json::Value;

const FEATURES: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

fn cli(server: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    c.args(args).args(["--server", server]);
    c
}

/// Runs the command off the async workers (the server answers on them).
async fn run(c: Command) -> (i32, String) {
    tokio::task::spawn_blocking(move || run_to_end(c))
        .await
        .unwrap()
}

/// The fixture's rows and scikit-learn's answers for them.
fn iris_expected() -> (Vec<Vec<f64>>, Vec<String>) {
    let e: Value = serde_json::from_str(
        &std::fs::read_to_string(root_path("examples/models/iris_sklearn/1/expected.json"))
            .unwrap(),
    )
    .unwrap();
    let rows = e["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    let labels = e["sklearn_predict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (rows, labels)
}

fn repo(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("models");
    install_model(
        &repo,
        "iris",
        1,
        &root_path("examples/models/iris_sklearn/1/model.joblib"),
    );
    std::fs::write(
        repo.join("iris/config.toml"),
        format!("feature_names = {FEATURES:?}\n"),
    )
    .unwrap();
    // A version that cannot load: requests to it are the server's failure (503).
    std::fs::create_dir_all(repo.join("broken/1")).unwrap();
    std::fs::write(repo.join("broken/1/model.onnx"), b"not an onnx file").unwrap();
    repo
}

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

/// A server that answers every request with `response` (a whole HTTP/1.1
/// answer): another kind of server than ferroserve, or a proxy's error page.
async fn foreign_server(response: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

/// Messages name the server without the password of --server; names that name
/// nothing (`..`) are usage errors found before anything is sent, in every
/// command; a model the server does not list is said so, not "refused"; another
/// kind of server's 200 is no empty table, and its error pages are cut short;
/// predict's errors name the file's lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_messages_are_accurate() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let server = TestServer::start_with(test_settings(&repo)).await;
    let with_password = server.base.replace("http://", "http://user:secretpw@");
    let (code, out) = run(cli(&with_password, &["status"])).await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("secretpw"), "{out}");
    assert!(out.contains("user:***@"), "{out}");

    // Usage errors (2) even with no server to ask (that would be 3).
    let model = root_path("examples/models/iris_lr/1/model.onnx")
        .display()
        .to_string();
    let rows = dir.path().join("rows.jsonl");
    std::fs::write(&rows, "[5.1, 3.5, 1.4, 0.2]\n").unwrap();
    let rows = rows.display().to_string();
    for args in [
        &["models", "status", ".."][..],
        &["models", "load", ".."],
        &["predict", "..", "--input", &rows],
        &["upload", &model, "--model", ".."],
        &["jobs", "status", ".."],
    ] {
        let (code, out) = run(cli("http://127.0.0.1:1", args)).await;
        assert_eq!(code, 2, "{args:?}: {out}");
    }
    // The gRPC port given as --server answers, in HTTP/2: a server that failed
    // to answer as ferroserve does (5), not one that cannot be reached (3).
    if let Some(grpc) = server.grpc_addr {
        let (code, out) = run(cli(&format!("http://{grpc}"), &["status"])).await;
        assert_eq!(code, 5, "{out}");
        assert!(out.contains("not the gRPC one"), "{out}");
    } else {
        panic!("the test server has no gRPC port");
    }
    let (code, out) = run(cli(&server.base, &["models", "status", "nosuch"])).await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("has no model \"nosuch\""), "{out}");
    assert!(!out.contains("refused"), "{out}");

    // Row numbers of the file, not of the request.
    let big = dir.path().join("big.jsonl");
    let text: String = (0..300)
        .map(|i| {
            if i == 290 {
                "[1, 2, 3]\n"
            } else {
                "[5.1, 3.5, 1.4, 0.2]\n"
            }
        })
        .collect();
    std::fs::write(&big, text).unwrap();
    let (code, out) = run(cli(
        &server.base,
        &["predict", "iris", "--input", &big.display().to_string()],
    ))
    .await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("line 291 of"), "{out}");
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        format!("{}\n5.1,3.5,1.4,0.2\n5.1,abc,1.4,0.2\n", FEATURES.join(",")),
    )
    .unwrap();
    let (code, out) = run(cli(
        &server.base,
        &["predict", "iris", "--input", &csv.display().to_string()],
    ))
    .await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("line 3 of"), "{out}");
    // A line that is no JSON is named with its file, as the server's refusals are.
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(&broken, "[5.1, 3.5, 1.4, 0.2]\n{\"sepal_length\": \n").unwrap();
    let (code, out) = run(cli(
        &server.base,
        &["predict", "iris", "--input", &broken.display().to_string()],
    ))
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("line 2 of ") && out.contains("broken.jsonl is not JSON"),
        "{out}"
    );
    server.stop().await;

    // Not ferroserve: a 200 that is not JSON is an unexpected answer (5).
    let url = foreign_server(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot json\n",
    )
    .await;
    let (code, out) = run(cli(&url, &["models", "list"])).await;
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("not JSON"), "{out}");
    assert!(!out.contains("MODEL"), "{out}");
    let page: &'static str = Box::leak(
        format!(
            "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n\
             <html><head><title>502 Bad Gateway</title></head><body>{}</body></html>",
            "<p>filler</p>".repeat(500)
        )
        .into_boxed_str(),
    );
    let url = foreign_server(page).await;
    let (code, out) = run(cli(&url, &["models", "list"])).await;
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("502 Bad Gateway"), "{out}");
    assert!(!out.contains("<html>") && out.len() < 1000, "{out}");
}

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

/// `--server` mistakes, told as such: a URL with a query or fragment (every
/// request went to `/?x=1…`) and one without a scheme are usage errors (2) that
/// show the value (nothing secret in it); https:// to a plain-HTTP port reached
/// the server (5, "use http://"), as the reverse mistake does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_url_mistakes_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(test_settings(&repo(dir.path()))).await;
    let base = server.base.clone();
    for (url, says) in [
        (format!("{base}?x=1"), "query"),
        (format!("{base}/#frag"), "fragment"),
    ] {
        let (code, out) = run(cli(&url, &["status"])).await;
        assert_eq!(code, 2, "{url}: {out}");
        assert!(out.contains(says), "{url}: {out}");
    }
    let bare = base.trim_start_matches("http://").to_string();
    let (code, out) = run(cli(&bare, &["status"])).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&format!("\"{bare}\"")), "{out}");
    assert!(out.contains(&format!("http://{bare}")), "{out}");
    server.stop().await;
}

/// https:// to a plain-HTTP port reached the server: 5 with "use http://", as the
/// reverse mistake is told (it was 3, "cannot reach the server").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_plain_http_port_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(test_settings(&repo(dir.path()))).await;
    let bare = server.base.trim_start_matches("http://").to_string();
    let (code, out) = run(cli(&format!("https://{bare}"), &["status"])).await;
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("http://"), "{out}");
    assert!(!out.contains("cannot reach"), "{out}");
    server.stop().await;
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

/// A 200 JSON answer without the fields a command reads is no ferroserve answer
/// (5): `200 {}` printed "model iris_lr loaded", "null job(s) in all" and "live
/// null, ready null", each with 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_without_their_fields_are_unexpected() {
    let url = foreign_server(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    for args in [
        &["status"][..],
        &["models", "list"],
        &["models", "status", "iris_lr"],
        &["models", "load", "iris_lr"],
        &["models", "unload", "iris_lr"],
        &["jobs", "list"],
        &["jobs", "status", "abc"],
    ] {
        let (code, out) = run(cli(&url, args)).await;
        assert_eq!(code, 5, "{args:?}: {out}");
        assert!(
            out.contains("answered what ferroserve does not"),
            "{args:?}: {out}"
        );
    }
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
