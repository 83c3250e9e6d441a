//! The `tensorflow_model_server` drop-in's own state and its messages, over the
//! real binary: a model whose base path cannot be written keeps its state in a
//! directory of the temporary directory that is its own and this user's alone,
//! and a refused value that came from a `FERROSERVE_*` variable names the
//! variable.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::child::{free_port, run_refused, ChildServer};
use common::{install_model, root_path};

/// A model base path whose `.ferroserve` cannot be made (a file holds the name),
/// as a read-only volume's cannot: its server keeps its state in the temporary
/// directory. (Root writes into read-only directories, so a mode would not do.)
fn unwritable_base(dir: &Path, name: &str) -> PathBuf {
    let base = dir.join(name);
    install_model(
        dir,
        name,
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    std::fs::write(base.join(".ferroserve"), b"").unwrap();
    base
}

/// `tensorflow_model_server` (the ferroserve binary under that name) serving
/// `base`, with `temp` as its temporary directory.
fn tfs(bin: &Path, base: &Path, temp: &Path, rest: u16) -> Command {
    let mut c = Command::new(bin.join("tensorflow_model_server"));
    c.arg(format!("--port={}", free_port()))
        .arg(format!("--rest_api_port={rest}"))
        .arg(format!("--model_base_path={}", base.display()))
        .env("TMPDIR", temp)
        .env_remove("FERROSERVE_STATE_DIR")
        .env_remove("FERROSERVE_DATABASE_URL");
    c
}

async fn start(command: Command, rest: u16) -> ChildServer {
    ChildServer::start(command, format!("127.0.0.1:{rest}").parse().unwrap()).await
}

/// The server state directories in `temp`, sorted.
fn state_dirs(temp: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(temp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ferroserve-"))
        })
        .collect();
    dirs.sort();
    dirs
}

/// Servers of different read-only base paths keep their metadata store and job
/// files apart (each its own `ferroserve-<uid>-<hash>`, mode 0700); a second
/// server of the same base, a replica, shares its directory. A directory of that
/// name that others may write (another user's plant) stops the start and asks
/// for --state-dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_bases_keep_their_state_apart() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_ferroserve"),
        bin.join("tensorflow_model_server"),
    )
    .unwrap();
    let temp = dir.path().join("tmp");
    std::fs::create_dir_all(&temp).unwrap();
    let models = dir.path().join("models");
    let (a, b) = (unwritable_base(&models, "a"), unwritable_base(&models, "b"));

    let rest = free_port();
    let server_a = start(tfs(&bin, &a, &temp, rest), rest).await;
    let dirs = state_dirs(&temp);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir_a = dirs[0].clone();
    assert!(dir_a.join("ferroserve.db").is_file(), "{dir_a:?}");
    let mode = std::fs::metadata(&dir_a).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");

    let rest = free_port();
    let server_b = start(tfs(&bin, &b, &temp, rest), rest).await;
    let dirs = state_dirs(&temp);
    assert_eq!(dirs.len(), 2, "{dirs:?}");

    let rest = free_port();
    let replica = start(tfs(&bin, &a, &temp, rest), rest).await;
    assert_eq!(state_dirs(&temp), dirs);
    drop((server_a, server_b, replica));

    std::fs::set_permissions(&dir_a, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, out) = run_refused(tfs(&bin, &a, &temp, free_port()));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&dir_a.display().to_string()), "{out}");
    assert!(out.contains("may be written by other users"), "{out}");
    assert!(out.contains("--state-dir"), "{out}");
}

/// Every `FERROSERVE_*` variable of `ferroserve serve`, as its help lists them.
fn serve_variables() -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let mut variables: Vec<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_string)
        .collect();
    variables.dedup();
    variables
}

/// A variable set but empty, or set to a value its flag refuses, is named in
/// the message: the user set the variable and may never have typed the flag.
/// Every variable of `serve` is tried.
#[test]
fn every_variables_errors_name_it() {
    let variables = serve_variables();
    assert!(variables.len() > 40, "{variables:?}");
    for variable in &variables {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
        c.arg("serve");
        // Should the empty value be taken, the start stops at once anyway (a
        // config file that is not there), so that the test never serves.
        if variable == "FERROSERVE_CONFIG" {
            c.arg("--tls-cert=/nonexistent/cert.pem");
        } else {
            c.arg("--config=/nonexistent/ferroserve.toml");
        }
        c.env(variable, "");
        let (code, out) = run_refused(c);
        assert_eq!(code, 2, "{variable}: {out}");
        assert!(
            out.contains(&format!(
                "the environment variable {variable} is set but empty"
            )),
            "{variable}: {out}"
        );
    }
    // A value the flag refuses: the variable and the value.
    for (variable, value, says) in [
        (
            "FERROSERVE_REST_ADDR",
            "abc",
            "invalid socket address syntax",
        ),
        (
            "FERROSERVE_LOG_FORMAT",
            "xml",
            "possible values: human, json",
        ),
        (
            "FERROSERVE_WORKER_CGROUPS",
            "maybe",
            "possible values: true, false",
        ),
        ("FERROSERVE_MAX_UPLOAD_BYTES", "-1", "invalid digit"),
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
        c.args(["serve", "--config=/nonexistent/ferroserve.toml"])
            .env(variable, value);
        let (code, out) = run_refused(c);
        assert_eq!(code, 2, "{variable}: {out}");
        assert!(
            out.contains(&format!(
                "invalid value {value:?} in the environment variable {variable}"
            )),
            "{variable}: {out}"
        );
        assert!(out.contains(says), "{variable}: {out}");
    }
    // A flag's own empty value is still clap's message about the flag.
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    c.args(["serve", "--auth-tokens="]);
    let (code, out) = run_refused(c);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("'--auth-tokens <FILE>'"), "{out}");
    assert!(!out.contains("environment variable"), "{out}");
}
