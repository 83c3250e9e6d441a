//! ferroserve as a drop-in for `tensorflow_model_server` (issue 18): installed
//! under that name it takes TF Serving's command line, as KServe's
//! `kserve-tensorflow-serving` runtime and TF Serving's container image give it.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::child::{free_port, run_refused, run_to_end, ChildServer};
use common::{install_model, root_path};
use serde_json::{json, Value};

/// A directory with `tensorflow_model_server` linked to the ferroserve binary,
/// and the ONNX iris model as `<dir>/models/iris/1/`.
struct Install {
    dir: tempfile::TempDir,
}

impl Install {
    fn new() -> Install {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_ferroserve"),
            dir.path().join("bin/tensorflow_model_server"),
        )
        .unwrap();
        install_model(
            &dir.path().join("models"),
            "iris",
            1,
            &root_path("examples/models/iris_lr/1/model.onnx"),
        );
        Install { dir }
    }

    fn tfs(&self) -> Command {
        let mut c = Command::new(self.dir.path().join("bin/tensorflow_model_server"));
        c.current_dir(self.dir.path());
        c
    }

    fn models(&self) -> PathBuf {
        self.dir.path().join("models")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

async fn predict(server: &ChildServer, model: &str) -> Value {
    let r = reqwest::Client::new()
        .post(server.url(&format!("/v1/models/{model}:predict")))
        .json(&json!({"instances": [[5.099_999_904_632_568, 3.5, 1.399_999_976_158_142, 0.200_000_002_980_232_24]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The answer ONNX Runtime gave for the fixture's first row (expected.json):
/// label 0, probability 0.979 for it.
fn iris_setosa(answer: &Value) {
    let first = &answer["predictions"][0];
    assert_eq!(first["label"], 0, "{answer}");
    let p = first["probabilities"][0].as_f64().unwrap();
    assert!((p - 0.979_223_2).abs() < 1e-6, "{answer}");
}

/// KServe's ServingRuntime command line, ports aside (free ones here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserves_command_line_serves_the_model() {
    let install = Install::new();
    let (grpc, rest) = (free_port(), free_port());
    let mut c = install.tfs();
    // A name the repository does not have: only --model_name can serve it.
    c.arg("--model_name=kserved")
        .arg(format!("--port={grpc}"))
        .arg(format!("--rest_api_port={rest}"))
        .arg(format!(
            "--model_base_path={}",
            install.models().join("iris").display()
        ))
        .arg("--rest_api_timeout_in_ms=60000");
    let server = ChildServer::start(c, format!("127.0.0.1:{rest}").parse().unwrap()).await;
    iris_setosa(&predict(&server, "kserved").await);
    let status: Value = reqwest::get(server.url("/v1/models/kserved"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["model_version_status"][0]["state"], "AVAILABLE",
        "{status}"
    );
    // gRPC listens on --port.
    assert!(std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok());
    // The state sits beside the versions, hidden from the version scan.
    assert!(install.models().join("iris/.ferroserve").is_dir());
}

/// TF Serving's batching parameters batch every model without its own
/// [batching]; its monitoring config serves the metrics at its path; single-dash
/// flags read as TF Serving reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_parameters_and_monitoring_config_apply() {
    let install = Install::new();
    std::fs::write(
        install.path("batching.conf"),
        "max_batch_size { value: 4 }\nbatch_timeout_micros { value: 2000000 }\n\
         num_batch_threads { value: 1 }\nallowed_batch_sizes: 4\n",
    )
    .unwrap();
    std::fs::write(
        install.path("monitoring.conf"),
        "prometheus_config {\n  enable: true,\n  path: \"/monitoring/prometheus/metrics\"\n}\n",
    )
    .unwrap();
    let (grpc, rest) = (free_port(), free_port());
    let mut c = install.tfs();
    c.arg("-model_name=iris")
        .arg(format!("-port={grpc}"))
        .arg(format!("--rest_api_port={rest}"))
        .arg(format!(
            "--model_base_path={}",
            install.models().join("iris").display()
        ))
        .arg("--enable_batching")
        .arg(format!(
            "--batching_parameters_file={}",
            install.path("batching.conf").display()
        ))
        .arg(format!(
            "--monitoring_config_file={}",
            install.path("monitoring.conf").display()
        ))
        // TF Serving's defaults ask for nothing and are accepted.
        .arg("--flush_filesystem_caches=true")
        .arg("--max_num_load_retries=5");
    let server = ChildServer::start(c, format!("127.0.0.1:{rest}").parse().unwrap()).await;
    // Four requests at once: one run of four rows (the batch fills before the
    // two-second timeout). Without batching, four runs of one row.
    let answers = futures::future::join_all((0..4).map(|_| predict(&server, "iris"))).await;
    assert_eq!(answers.len(), 4);
    let metrics = reqwest::get(server.url("/monitoring/prometheus/metrics"))
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains("model=\"iris\""))
            .unwrap_or_else(|| panic!("no {name} for iris in:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(line("ferroserve_batch_size_sum"), 4.0, "{text}");
    assert_eq!(line("ferroserve_batch_size_count"), 1.0, "{text}");
}

/// The drop-in's warnings reach the log: a batching file without
/// `--enable_batching` is ignored, saying so (its warning, made before logging
/// started, was lost, as was the one for a config file beside --model_base_path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_warnings_reach_the_log() {
    let install = Install::new();
    std::fs::write(
        install.path("batching.conf"),
        "max_batch_size { value: 4 }\n",
    )
    .unwrap();
    let (grpc, rest) = (free_port(), free_port());
    let mut c = install.tfs();
    c.arg("--model_name=iris")
        .arg(format!("--port={grpc}"))
        .arg(format!("--rest_api_port={rest}"))
        .arg(format!(
            "--model_base_path={}",
            install.models().join("iris").display()
        ))
        .arg(format!(
            "--batching_parameters_file={}",
            install.path("batching.conf").display()
        ));
    let server = ChildServer::start(c, format!("127.0.0.1:{rest}").parse().unwrap()).await;
    iris_setosa(&predict(&server, "iris").await);
    let log = server.log();
    assert!(
        log.contains("--batching_parameters_file is ignored without --enable_batching"),
        "{log}"
    );
}

/// A batching parameters file that cannot be served stops the start with an
/// error in the file's own terms: the file, the field it gives and the value, and,
/// where the check involves a field the file leaves out, the default used for it;
/// never ferroserve's `config.toml` key names (`batching.max_queue_length`,
/// `batching.instances`) or a default of its own the file never set. The same
/// under TF Serving's name and with `ferroserve serve`.
#[test]
fn batching_file_errors_speak_the_files_terms() {
    let install = Install::new();
    for (i, (content, says, never)) in [
        (
            "max_enqueued_batches { value: 0 }",
            "line 1: max_enqueued_batches must be at least 1, not 0",
            "max_queue_length",
        ),
        (
            "num_batch_threads { value: 0 }",
            "line 1: num_batch_threads must be between 1 and 256, not 0",
            "instances",
        ),
        (
            "allowed_batch_sizes: 8",
            "line 1: allowed_batch_sizes: the last (8) must equal max_batch_size, which \
             the file leaves out (TF Serving's default, which ferroserve follows: 1000)",
            "(32)",
        ),
        (
            "batch_timeout_micros { value: 20000000 }",
            "line 1: batch_timeout_micros must be at most 10000000 (10 s), not 20000000",
            "max_queue_delay_micros",
        ),
        (
            "max_batch_size { value: -1 }",
            "line 1: max_batch_size must be a non-negative integer, not -1",
            "value must",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let file = install.path(&format!("batching{i}.conf"));
        std::fs::write(&file, format!("{content}\n")).unwrap();
        let serve = {
            let mut c = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
            c.current_dir(install.path("")).arg("serve");
            c
        };
        for mut c in [install.tfs(), serve] {
            c.arg("--model_name=lr")
                .arg(format!("--port={}", free_port()))
                .arg(format!("--rest_api_port={}", free_port()))
                .arg(format!(
                    "--model_base_path={}",
                    install.models().join("iris").display()
                ))
                .arg("--enable_batching")
                .arg(format!("--batching_parameters_file={}", file.display()));
            let (code, out) = run_refused(c);
            assert_ne!(code, 0, "{content}: {out}");
            let whole = format!("--batching_parameters_file {}: {says}", file.display());
            assert!(out.contains(&whole), "{content}: want {whole:?} in\n{out}");
            assert!(!out.contains(never), "{content}: {never:?} in\n{out}");
            assert!(!out.contains("batching."), "{content}: {out}");
        }
    }
}

/// A valid batching parameters file serves: a `max_batch_size` it leaves out is
/// TF Serving's default, 1000 (its last `allowed_batch_sizes` must be that, as in
/// TF Serving), and the model batches with it; so is `--enable_batching`'s
/// without a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batching_file_without_max_batch_size_takes_tf_servings_default() {
    let install = Install::new();
    std::fs::write(
        install.path("batching.conf"),
        "allowed_batch_sizes: 8\nallowed_batch_sizes: 1000\n\
         max_enqueued_batches { value: 2 }\nnum_batch_threads { value: 2 }\n",
    )
    .unwrap();
    let (grpc, rest) = (free_port(), free_port());
    let mut c = install.tfs();
    c.arg("--model_name=iris")
        .arg(format!("--port={grpc}"))
        .arg(format!("--rest_api_port={rest}"))
        .arg(format!(
            "--model_base_path={}",
            install.models().join("iris").display()
        ))
        .arg("--enable_batching")
        .arg(format!(
            "--batching_parameters_file={}",
            install.path("batching.conf").display()
        ));
    let server = ChildServer::start(c, format!("127.0.0.1:{rest}").parse().unwrap()).await;
    iris_setosa(&predict(&server, "iris").await);
    let config: Value = reqwest::get(server.url("/v2/models/iris/config"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["max_batch_size"], 1000, "{config}");
    drop(server);

    // `--enable_batching` without a file: TF Serving's parameters with nothing set.
    let (grpc, rest) = (free_port(), free_port());
    let mut c = install.tfs();
    c.arg("--model_name=iris")
        .arg(format!("--port={grpc}"))
        .arg(format!("--rest_api_port={rest}"))
        .arg(format!(
            "--model_base_path={}",
            install.models().join("iris").display()
        ))
        .arg("--enable_batching");
    let server = ChildServer::start(c, format!("127.0.0.1:{rest}").parse().unwrap()).await;
    let config: Value = reqwest::get(server.url("/v2/models/iris/config"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["max_batch_size"], 1000, "{config}");
}

/// TF Serving's container image names its model with MODEL_NAME and
/// MODEL_BASE_PATH and serves `<base>/<name>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_environment_names_the_model() {
    let install = Install::new();
    let (grpc, rest) = (free_port(), free_port());
    let mut c = install.tfs();
    // Outside the default repository (`models` in the working directory), under a
    // name it does not have: only the variables can serve it.
    install_model(
        &install.path("container"),
        "from_env",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    c.arg(format!("--port={grpc}"))
        .arg(format!("--rest_api_port={rest}"))
        .env("MODEL_NAME", "from_env")
        .env("MODEL_BASE_PATH", install.path("container"));
    let server = ChildServer::start(c, format!("127.0.0.1:{rest}").parse().unwrap()).await;
    iris_setosa(&predict(&server, "from_env").await);
}

/// Flags that ask for what ferroserve does not do are refused with the reason;
/// `--version` answers.
#[test]
fn unsupported_flags_are_refused_clearly() {
    let install = Install::new();
    let base = format!(
        "--model_base_path={}",
        install.models().join("iris").display()
    );
    for (flag, says) in [
        ("--ssl_config_file=/etc/ssl.conf", "--tls-cert"),
        ("--grpc_socket_path=/tmp/s.sock", "TCP only"),
        ("--rest_api_port=0", "always serves"),
        ("--enable_per_model_batching_parameters", "config.toml"),
        ("--no_such_flag=1", "no_such_flag"),
    ] {
        let mut c = install.tfs();
        c.arg(&base).arg(flag);
        let (code, out) = run_to_end(c);
        assert_ne!(code, 0, "{flag}: {out}");
        assert!(out.contains(says), "{flag}: {out}");
    }
    let mut c = install.tfs();
    c.arg("--version");
    let (code, out) = run_to_end(c);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("tensorflow_model_server"), "{out}");
}

/// KServe's runtime and TF Serving's container image put the user's arguments
/// after their own fixed ones: as in TF Serving, the last value of a flag wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_flags_override_earlier_ones() {
    let install = Install::new();
    let (grpc, rest) = (free_port(), free_port());
    let mut c = install.tfs();
    c.arg("--port=1")
        .arg("--rest_api_port=2")
        .arg("--model_name=fixed")
        .arg(format!(
            "--model_base_path={}",
            install.path("absent").display()
        ))
        .arg("--max_num_load_retries=3")
        // The user's arguments.
        .arg(format!("--port={grpc}"))
        .arg(format!("--rest_api_port={rest}"))
        .arg("-model_name=overridden")
        .arg(format!(
            "--model_base_path={}",
            install.models().join("iris").display()
        ))
        .arg("--max_num_load_retries=5");
    let server = ChildServer::start(c, format!("127.0.0.1:{rest}").parse().unwrap()).await;
    iris_setosa(&predict(&server, "overridden").await);
    assert!(std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok());
}

/// Every flag of TF Serving's main.cc given its default value asks for nothing
/// and is accepted, those whose default TF Serving computes from the CPUs (4 ×
/// CPUs threads, a TF Lite pool per CPU) included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_servings_defaults_are_accepted() {
    let install = Install::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (grpc, rest) = (free_port(), free_port());
    let mut c = install.tfs();
    c.arg(format!("--port={grpc}"))
        .arg(format!("--rest_api_port={rest}"))
        .arg(format!(
            "--model_base_path={}",
            install.models().join("iris").display()
        ));
    for flag in [
        "--enable_grpc_healthcheck_service=false",
        "--xla_gpu_compilation_enabled=false",
        "--xla_cpu_compilation_enabled=false",
        "--enable_serialization_as_tensor_content=false",
        &format!("--rest_api_num_threads={}", 4 * cpus),
        &format!("--grpc_max_threads={}", 4 * cpus),
        &format!("--num_tflite_pools={cpus}"),
        "--num_tflite_interpreters_per_pool=1",
        "--grpc_socket_path=",
        "--saved_model_tags=serve",
        "--enable_profiler=true",
    ] {
        c.arg(flag);
    }
    let server = ChildServer::start(c, format!("127.0.0.1:{rest}").parse().unwrap()).await;
    iris_setosa(&predict(&server, "default").await);
}

/// TF Serving's binary needs --model_base_path or --model_config_file ("Both
/// server_options.model_base_path and server_options.model_config_file are
/// empty!"); /models/model is its container image's doing. Without them, and
/// without the image's variables, the drop-in refuses too, rather than serve
/// ferroserve's `./models` (which the working directory here has).
#[test]
fn no_model_is_refused_as_tf_serving_refuses_it() {
    let install = Install::new();
    let mut c = install.tfs();
    c.arg(format!("--port={}", free_port()))
        .arg(format!("--rest_api_port={}", free_port()))
        .env_remove("MODEL_NAME")
        .env_remove("MODEL_BASE_PATH")
        .env_remove("FERROSERVE_MODEL_REPOSITORY")
        .env_remove("FERROSERVE_MODEL_CONFIG_FILE");
    let (code, out) = run_refused(c);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("--model_base_path"), "{out}");
    assert!(out.contains("--model_config_file"), "{out}");
}

/// A base path that does not exist (a typo, a volume not mounted yet) stops the
/// start with TF Serving's "Could not find base path", and nothing is created:
/// given as a flag or by the container image's variables.
#[test]
fn a_missing_base_path_stops_the_start_and_creates_nothing() {
    let install = Install::new();
    let absent = install.path("absent");
    let mut c = install.tfs();
    c.arg(format!("--port={}", free_port()))
        .arg(format!("--rest_api_port={}", free_port()))
        .arg(format!("--model_base_path={}", absent.display()));
    let (code, out) = run_refused(c);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Could not find base path"), "{out}");
    assert!(out.contains(&absent.display().to_string()), "{out}");
    assert!(!absent.exists(), "{out}");

    let mut c = install.tfs();
    c.arg(format!("--port={}", free_port()))
        .arg(format!("--rest_api_port={}", free_port()))
        .env("MODEL_NAME", "mlp")
        .env("MODEL_BASE_PATH", &absent);
    let (code, out) = run_refused(c);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Could not find base path"), "{out}");
    assert!(!absent.exists(), "{out}");
}

/// Under TF Serving's name, help and usage errors name the program as invoked:
/// `tensorflow_model_server [OPTIONS]`, never the `… serve` that name refuses.
#[test]
fn usage_names_the_program_as_invoked() {
    let install = Install::new();
    let mut c = install.tfs();
    c.arg("--help");
    let (code, help) = run_to_end(c);
    assert_eq!(code, 0, "{help}");
    let mut c = install.tfs();
    c.arg("--no_such_flag=1");
    let (code, error) = run_to_end(c);
    assert_eq!(code, 2, "{error}");
    for out in [help, error] {
        assert!(
            out.contains("Usage: tensorflow_model_server [OPTIONS]"),
            "{out}"
        );
        assert!(!out.contains("tensorflow_model_server serve"), "{out}");
    }
}

/// Protobuf's text format lets a message field drop its colon and give a
/// repeated field's values as a list: `config [{ … }]`, `version_labels [{ … }]`,
/// as TF Serving reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_config_file_takes_lists_of_messages() {
    let install = Install::new();
    let base = install.models().join("iris");
    std::fs::write(
        install.path("models.config"),
        format!(
            "model_config_list {{\n  config [{{\n    name: \"listed\"\n    base_path: {base:?}\n    \
             version_labels [{{ key: \"stable\" value: 1 }}]\n  }}]\n}}\n"
        ),
    )
    .unwrap();
    let (grpc, rest) = (free_port(), free_port());
    let mut c = install.tfs();
    c.arg(format!("--port={grpc}"))
        .arg(format!("--rest_api_port={rest}"))
        .arg(format!(
            "--model_config_file={}",
            install.path("models.config").display()
        ));
    let server = ChildServer::start(c, format!("127.0.0.1:{rest}").parse().unwrap()).await;
    iris_setosa(&predict(&server, "listed").await);
    iris_setosa(&predict(&server, "listed/labels/stable").await);
}

/// A monitoring path that a route of the server answers or captures, or that is
/// not a plain path, stops the start with a clear error (exit 1, as other bad
/// config files), never a panic (axum's "Overlapping method route").
#[test]
fn a_monitoring_path_a_route_answers_is_refused() {
    let install = Install::new();
    for path in [
        "/healthz",
        "/v2",
        "/v2/health/ready",
        "/docs",
        "/v1/jobs",
        "/openapi.json",
        "/console",
        "/",
        "/v2/models/:x",
        "/v1/models/m",
        "/a/../b",
    ] {
        let config = install.path("monitoring.conf");
        std::fs::write(
            &config,
            format!("prometheus_config {{ enable: true path: \"{path}\" }}"),
        )
        .unwrap();
        let mut c = install.tfs();
        c.arg(format!("--port={}", free_port()))
            .arg(format!("--rest_api_port={}", free_port()))
            .arg(format!(
                "--model_base_path={}",
                install.models().join("iris").display()
            ))
            .arg(format!("--monitoring_config_file={}", config.display()))
            .env("RUST_BACKTRACE", "0");
        let (code, out) = run_refused(c);
        assert_eq!(code, 1, "{path}: {out}");
        assert!(!out.contains("panicked"), "{path}: {out}");
        assert!(out.contains("--monitoring_config_file"), "{path}: {out}");
        assert!(out.contains(&format!("{path:?}")), "{path}: {out}");
    }
}

/// `--version` and `--version=true` print the version under both names
/// (`ferroserve serve` takes TF Serving's flags); `--version=false` asks for
/// nothing, as in TF Serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_flag_as_tf_serving_reads_it() {
    let install = Install::new();
    for name in ["tfs", "serve"] {
        for flag in ["--version", "--version=true", "-version"] {
            let mut c = if name == "tfs" {
                install.tfs()
            } else {
                let mut c = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
                c.arg("serve");
                c
            };
            c.arg(flag);
            let (code, out) = run_to_end(c);
            assert_eq!(code, 0, "{name} {flag}: {out}");
            assert!(
                out.contains(env!("CARGO_PKG_VERSION")),
                "{name} {flag}: {out}"
            );
        }
    }
    let mut c = install.tfs();
    c.arg("--version=maybe");
    let (code, out) = run_to_end(c);
    assert_eq!(code, 2, "{out}");
    let rest = free_port();
    let mut c = install.tfs();
    c.arg("--version=false")
        .arg(format!("--port={}", free_port()))
        .arg(format!("--rest_api_port={rest}"))
        .arg(format!(
            "--model_base_path={}",
            install.models().join("iris").display()
        ));
    let server = ChildServer::start(c, format!("127.0.0.1:{rest}").parse().unwrap()).await;
    iris_setosa(&predict(&server, "default").await);
}

/// A TF Serving flag overrides the FERROSERVE_* variable of the same setting, as
/// every flag overrides the environment; two flags of one setting are refused.
/// --model_base_path wins over FERROSERVE_MODEL_CONFIG_FILE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_flags_override_the_environment() {
    let install = Install::new();
    let other = install.path("other.config");
    std::fs::write(
        &other,
        "model_config_list { config { name: \"other\" base_path: \"/nonexistent\" } }",
    )
    .unwrap();
    let (grpc, rest) = (free_port(), free_port());
    let mut c = install.tfs();
    c.env("FERROSERVE_REQUEST_TIMEOUT_SECS", "60")
        .env("FERROSERVE_GRPC_ADDR", "127.0.0.1:1")
        .env("FERROSERVE_MODEL_CONFIG_FILE", &other)
        .arg("--rest_api_timeout_in_ms=60000")
        .arg(format!("--port={grpc}"))
        .arg(format!("--rest_api_port={rest}"))
        .arg(format!(
            "--model_base_path={}",
            install.models().join("iris").display()
        ));
    let server = ChildServer::start(c, format!("127.0.0.1:{rest}").parse().unwrap()).await;
    iris_setosa(&predict(&server, "default").await);
    assert!(std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok());
    drop(server);

    let mut c = install.tfs();
    c.arg("--request-timeout-secs=5")
        .arg("--rest_api_timeout_in_ms=60000")
        .arg(format!(
            "--model_base_path={}",
            install.models().join("iris").display()
        ));
    let (code, out) = run_refused(c);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("set the same thing"), "{out}");
}
