//! TensorFlow Serving's command line, so that ferroserve is a drop-in for
//! `tensorflow_model_server`: installed (or linked) under that name it takes TF
//! Serving's flags and environment, and `ferroserve serve` takes the same flags
//! beside its own.
//!
//! * Flags that are a ferroserve setting under another name are folded into
//!   [`ServeArgs`] ([`TfsArgs::fold_into`]): `--port` (gRPC), `--rest_api_port`,
//!   `--rest_api_timeout_in_ms`, `--model_config_file`, the poll waits,
//!   `--num_load_threads`, `--tensorflow_intra_op_parallelism` (ONNX Runtime's
//!   intra-op threads), `--grpc_channel_arguments` (message size limits).
//! * Flags ferroserve has no other name for set [`Settings`] fields
//!   ([`TfsArgs::finish`]): `--model_name` / `--model_base_path` (one model from its
//!   own directory), `--enable_batching` with `--batching_parameters_file` (TF
//!   Serving's `BatchingParameters` text format, [`parse_batching_parameters`]) as
//!   the batching of every model whose `config.toml` has no `[batching]`,
//!   `--monitoring_config_file` (its Prometheus path, [`parse_monitoring_config`]),
//!   `--allow_version_labels_for_unavailable_models`, `--enable_model_warmup`,
//!   `--saved_model_tags` and the session thread flags
//!   (`--tensorflow_intra_op_parallelism`, `--tensorflow_inter_op_parallelism`,
//!   `--tensorflow_session_parallelism`) as the `[tensorflow]` settings of every
//!   SavedModel whose `config.toml` does not give them.
//! * TF Serving's other flags ([`UNSUPPORTED`]) are accepted with their default
//!   value (they ask for nothing) and refused with any other, with a message that
//!   says why and what to use instead; thread counts whose default TF Serving
//!   computes from the CPUs are accepted with any count and ignored.
//!
//! A TF Serving flag overrides the `FERROSERVE_*` variable of the same setting (as
//! every flag overrides the environment); given with the ferroserve flag of the
//! same setting it is refused. A `--monitoring_config_file` path that a route of
//! the server answers is refused (`crate::http::check_metrics_path`), and
//! each thread flag is at most `crate::settings::MAX_THREADS`.
//!
//! As in TF Serving, a flag given twice takes its last value, and under TF
//! Serving's name a model (`--model_base_path`) or a config file must be given:
//! ferroserve's default repository is never served in their place. A base path
//! that does not exist stops the start ([`TfsArgs::finish`]); one that cannot be
//! written keeps the server's state in a directory of the temporary directory
//! that is its own and this user's alone ([`state_dir`]).
//!
//! TF Serving spells flags `--name=value` or `-name=value`; [`normalize_args`]
//! turns the single-dash form into the double-dash one clap reads.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::model_config::TensorflowDefaults;
use crate::settings::{ServeArgs, Settings, SingleModel};

mod state_dir;
mod text_format;

use state_dir::{check_base_path, single_model_state_dir};
pub use text_format::{parse_batching_parameters, parse_monitoring_config};
use text_format::{read_batching_parameters, tfs_default_batching};

/// The name TF Serving's binary has; ferroserve installed under it takes its flags.
pub const TFS_BINARY: &str = "tensorflow_model_server";

/// TF Serving's flags (see the module documentation). Ids carry a `tfs_` prefix so
/// that they never clash with ferroserve's own flags of a similar name. Each flag
/// overrides itself: given twice, the last value wins, as in TF Serving, whose
/// container image and KServe's runtime put the user's arguments after their own
/// `--port`/`--rest_api_port`.
// Doc comments here are also clap's --help text, written for a terminal: `<dir>`
// placeholders and `[default: …]` are not HTML or intra-doc links.
#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "TensorFlow Serving's flags (tensorflow_model_server drop-in)")]
pub struct TfsArgs {
    /// gRPC port, on all interfaces (as --grpc-addr 0.0.0.0:PORT)
    #[arg(
        long = "port",
        id = "tfs_port",
        overrides_with = "tfs_port",
        value_name = "PORT"
    )]
    pub port: Option<u16>,
    /// REST port, on all interfaces (as --rest-addr 0.0.0.0:PORT)
    #[arg(
        long = "rest_api_port",
        id = "tfs_rest_api_port",
        overrides_with = "tfs_rest_api_port",
        value_name = "PORT"
    )]
    pub rest_api_port: Option<u16>,
    /// Request deadline in milliseconds (as --request-timeout-secs)
    #[arg(
        long = "rest_api_timeout_in_ms",
        id = "tfs_rest_api_timeout_in_ms",
        overrides_with = "tfs_rest_api_timeout_in_ms",
        value_name = "MS"
    )]
    pub rest_api_timeout_in_ms: Option<u64>,
    /// Name of the one model --model_base_path serves [default: default]
    #[arg(
        long = "model_name",
        id = "tfs_model_name",
        overrides_with = "tfs_model_name",
        value_name = "NAME"
    )]
    pub model_name: Option<String>,
    /// Directory of the one model's versions (<base>/<version>/…), served instead of
    /// the repository
    #[arg(
        long = "model_base_path",
        id = "tfs_model_base_path",
        overrides_with = "tfs_model_base_path",
        value_name = "DIR"
    )]
    pub model_base_path: Option<PathBuf>,
    /// As --model-config-file (TF Serving's text format or ferroserve's TOML); wins
    /// over --model_name/--model_base_path, as in TF Serving
    #[arg(
        long = "model_config_file",
        id = "tfs_model_config_file",
        overrides_with = "tfs_model_config_file",
        value_name = "FILE"
    )]
    pub model_config_file: Option<PathBuf>,
    /// As --model-config-file-poll-wait-seconds
    #[arg(
        long = "model_config_file_poll_wait_seconds",
        id = "tfs_model_config_file_poll_wait_seconds",
        overrides_with = "tfs_model_config_file_poll_wait_seconds",
        value_name = "SECONDS"
    )]
    pub model_config_file_poll_wait_seconds: Option<i64>,
    /// As --file-system-poll-wait-seconds
    #[arg(
        long = "file_system_poll_wait_seconds",
        id = "tfs_file_system_poll_wait_seconds",
        overrides_with = "tfs_file_system_poll_wait_seconds",
        value_name = "SECONDS"
    )]
    pub file_system_poll_wait_seconds: Option<i64>,
    /// Batch every model whose config.toml has no [batching]
    #[arg(
        long = "enable_batching",
        id = "tfs_enable_batching",
        overrides_with = "tfs_enable_batching",
        value_name = "BOOL",
        value_parser = tfs_bool,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub enable_batching: Option<bool>,
    /// TF Serving's BatchingParameters text file: those models' batching
    #[arg(
        long = "batching_parameters_file",
        id = "tfs_batching_parameters_file",
        overrides_with = "tfs_batching_parameters_file",
        value_name = "FILE"
    )]
    pub batching_parameters_file: Option<PathBuf>,
    /// TF Serving's MonitoringConfig text file: its prometheus_config path also
    /// serves the metrics
    #[arg(
        long = "monitoring_config_file",
        id = "tfs_monitoring_config_file",
        overrides_with = "tfs_monitoring_config_file",
        value_name = "FILE"
    )]
    pub monitoring_config_file: Option<PathBuf>,
    /// Let labels name versions that are not available (every model)
    #[arg(
        long = "allow_version_labels_for_unavailable_models",
        id = "tfs_allow_version_labels_for_unavailable_models",
        overrides_with = "tfs_allow_version_labels_for_unavailable_models",
        value_name = "BOOL",
        value_parser = tfs_bool,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub allow_version_labels_for_unavailable_models: Option<bool>,
    /// Warm up new versions before they serve, unless a model's config.toml says
    /// otherwise [default: true]
    #[arg(
        long = "enable_model_warmup",
        id = "tfs_enable_model_warmup",
        overrides_with = "tfs_enable_model_warmup",
        value_name = "BOOL",
        value_parser = tfs_bool,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub enable_model_warmup: Option<bool>,
    /// As --max-concurrent-loads (0, TF Serving's default, loads one at a time)
    #[arg(
        long = "num_load_threads",
        id = "tfs_num_load_threads",
        overrides_with = "tfs_num_load_threads",
        value_name = "N"
    )]
    pub num_load_threads: Option<usize>,
    /// SavedModels' intra-op threads, and as --onnx-intra-threads (0: TensorFlow's
    /// and ferroserve's defaults)
    #[arg(
        long = "tensorflow_intra_op_parallelism",
        id = "tfs_tensorflow_intra_op_parallelism",
        overrides_with = "tfs_tensorflow_intra_op_parallelism",
        value_name = "N"
    )]
    pub tensorflow_intra_op_parallelism: Option<usize>,
    /// SavedModels' inter-op threads (0: TensorFlow chooses)
    #[arg(
        long = "tensorflow_inter_op_parallelism",
        id = "tfs_tensorflow_inter_op_parallelism",
        overrides_with = "tfs_tensorflow_inter_op_parallelism",
        value_name = "N"
    )]
    pub tensorflow_inter_op_parallelism: Option<usize>,
    /// SavedModels' intra- and inter-op threads when neither
    /// --tensorflow_intra_op_parallelism nor --tensorflow_inter_op_parallelism is
    /// given (0: TensorFlow chooses)
    #[arg(
        long = "tensorflow_session_parallelism",
        id = "tfs_tensorflow_session_parallelism",
        overrides_with = "tfs_tensorflow_session_parallelism",
        value_name = "N"
    )]
    pub tensorflow_session_parallelism: Option<usize>,
    /// The tag set SavedModels are loaded with, comma-separated, for models whose
    /// config.toml gives no [tensorflow] tags [default: serve]
    #[arg(
        long = "saved_model_tags",
        id = "tfs_saved_model_tags",
        overrides_with = "tfs_saved_model_tags",
        value_name = "TAGS"
    )]
    pub saved_model_tags: Option<String>,
    /// grpc.max_receive_message_length / grpc.max_send_message_length, comma-separated
    #[arg(
        long = "grpc_channel_arguments",
        id = "tfs_grpc_channel_arguments",
        overrides_with = "tfs_grpc_channel_arguments",
        value_name = "ARGS"
    )]
    pub grpc_channel_arguments: Option<String>,
    /// `--version` under TF Serving's name ([`normalize_args`] renames it)
    #[arg(
        long = "tfs-version",
        id = "tfs_version",
        overrides_with = "tfs_version",
        hide = true
    )]
    pub version: bool,
    /// Whether the program was started under TF Serving's name (set by
    /// [`TfsArgs::with_container_env`]): then, as in TF Serving, the models must be
    /// named, and [`TfsArgs::finish`] refuses to fall back to ferroserve's default
    /// repository.
    #[arg(skip)]
    pub under_tfs_name: bool,
    /// The serve command's settings (ids of [`ServeArgs`] fields, `grpc_addr`) whose
    /// value came from a `FERROSERVE_*` environment variable (set by `main` from
    /// clap's value sources). A TF Serving flag of the same setting overrides such a
    /// value, as every flag overrides the environment; only two command-line flags
    /// of one setting are refused ([`TfsArgs::fold_into`]).
    #[arg(skip)]
    pub from_environment: BTreeSet<String>,
    /// The serve command's settings given as command-line flags (as above).
    #[arg(skip)]
    pub from_command_line: BTreeSet<String>,
    /// Whether `model_base_path` came from the container image's variables
    /// (`MODEL_NAME`, `MODEL_BASE_PATH`), not from the command line.
    #[arg(skip)]
    pub base_path_from_environment: bool,
}

/// A TF Serving command line ferroserve cannot honour.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct TfsError(pub String);

fn fail(m: impl Into<String>) -> TfsError {
    TfsError(m.into())
}

/// The values of a TF Serving flag in [`UNSUPPORTED`] that ask for nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Accepted {
    /// Only TF Serving's default; any other value is refused.
    Default(&'static str),
    /// Any count (a whole number): the flag sizes a thread pool of TF Serving's
    /// that ferroserve does not have, with a default TF Serving computes from the
    /// machine's CPUs. ferroserve sizes its own pools, so the count is ignored.
    AnyCount,
    /// `true` or `false`: ferroserve does what either value asks for.
    AnyBool,
}

/// TF Serving's flags that ask for something ferroserve does not do: each with the
/// values that ask for nothing and why any other is refused. Together with
/// [`TfsArgs`] and `--version`, these are all the flags of TF Serving's `main.cc`.
#[rustfmt::skip]
pub const UNSUPPORTED: &[(&str, Accepted, &str)] = &[
    ("grpc_socket_path", Accepted::Default(""), "ferroserve serves gRPC on TCP only (--grpc-addr)"),
    // TF Serving's default: 4 × the CPUs.
    ("rest_api_num_threads", Accepted::AnyCount, "REST runs on ferroserve's async workers; size inference with --inference-threads"),
    ("rest_api_enable_cors_support", Accepted::Default("false"), "ferroserve sends no CORS headers; put a proxy in front for browsers on other origins"),
    ("enable_per_model_batching_parameters", Accepted::Default("false"), "give each model its [batching] table in <model>/config.toml"),
    ("num_unload_threads", Accepted::Default("0"), "ferroserve unloads a version when its last request ends"),
    ("max_num_load_retries", Accepted::Default("5"), "a version that fails to load is in ERROR until its files change or it is reloaded"),
    ("load_retry_interval_micros", Accepted::Default("60000000"), "a version that fails to load is in ERROR until its files change or it is reloaded"),
    ("flush_filesystem_caches", Accepted::Default("true"), "ferroserve keeps no file-system caches of its own"),
    ("tensorflow_session_config_file", Accepted::Default(""), "there is no TensorFlow session config"),
    ("use_alts_credentials", Accepted::Default("false"), "use TLS: --tls-cert, --tls-key, --tls-client-ca"),
    ("ssl_config_file", Accepted::Default(""), "use TLS with PEM files: --tls-cert, --tls-key, --tls-client-ca"),
    ("platform_config_file", Accepted::Default(""), "the backend follows the model file (saved_model.pb, model.onnx, model.pkl, model.joblib)"),
    ("per_process_gpu_memory_fraction", Accepted::Default("0"), "ferroserve runs models on the CPU"),
    // TF Serving's default: 4 × the CPUs.
    ("grpc_max_threads", Accepted::AnyCount, "gRPC runs on ferroserve's async workers; limit streams with --grpc-max-concurrent-streams"),
    ("num_request_iterations_for_warmup", Accepted::Default("0"), "warm-up runs each request once"),
    ("remove_unused_fields_from_bundle_metagraph", Accepted::Default("true"), "there is no TensorFlow meta graph"),
    ("prefer_tflite_model", Accepted::Default("false"), "TensorFlow Lite models are not served"),
    // TF Serving's default: the CPUs. Without --prefer_tflite_model it sizes nothing.
    ("num_tflite_pools", Accepted::AnyCount, "TensorFlow Lite models are not served"),
    ("num_tflite_interpreters_per_pool", Accepted::Default("1"), "TensorFlow Lite models are not served"),
    ("enable_signature_method_name_check", Accepted::Default("false"), "ferroserve does not check SignatureDef method names"),
    ("xla_cpu_compilation_enabled", Accepted::Default("false"), "there is no XLA"),
    ("xla_gpu_compilation_enabled", Accepted::Default("false"), "there is no XLA, and ferroserve runs models on the CPU"),
    ("enable_profiler", Accepted::Default("true"), "there is no TensorFlow profiler service"),
    ("thread_pool_factory_config_file", Accepted::Default(""), "there is no thread-pool factory config"),
    ("mixed_precision", Accepted::Default(""), "ferroserve runs a model's own precision"),
    ("skip_initialize_tpu", Accepted::Default("false"), "ferroserve runs models on the CPU"),
    // ferroserve always serves grpc.health.v1.Health (TF Serving's `true`); that
    // one service more than `false` asks for harms no client.
    ("enable_grpc_healthcheck_service", Accepted::AnyBool, "ferroserve always serves grpc.health.v1.Health"),
    ("enable_serialization_as_tensor_content", Accepted::Default("false"), "ferroserve's gRPC responses give values in the typed fields (float_val, …), as TF Serving's default does"),
];

fn unsupported(name: &str) -> Option<&'static (&'static str, Accepted, &'static str)> {
    UNSUPPORTED.iter().find(|(n, _, _)| *n == name)
}

/// Whether `value` of an [`UNSUPPORTED`] flag asks for nothing; if not, why not.
fn check_unsupported(
    flag: &str,
    accepted: Accepted,
    why: &str,
    value: &str,
) -> Result<(), TfsError> {
    match accepted {
        Accepted::Default(d) if same_value(value, d) => Ok(()),
        Accepted::Default(_) => Err(fail(format!(
            "--{flag}={value} is a TensorFlow Serving flag ferroserve does not support: {why}"
        ))),
        Accepted::AnyCount if value.parse::<u32>().is_ok() => Ok(()),
        Accepted::AnyCount => Err(fail(format!("--{flag}={value}: give a whole number"))),
        Accepted::AnyBool if truthy(value).is_some() => Ok(()),
        Accepted::AnyBool => Err(fail(format!("--{flag}={value}: give true or false"))),
    }
}

/// A TF Serving boolean flag's value for clap: `true`, `false`, `1` or `0` (as
/// TensorFlow's flag parser takes them; `yes`, `on` are refused as there).
fn tfs_bool(v: &str) -> Result<bool, String> {
    truthy(v).ok_or_else(|| format!("{v:?} is not a boolean: give true or false"))
}

/// A boolean flag's value, in any spelling TF Serving accepts.
fn truthy(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Whether `value` is the same as `default` for a flag (booleans in any
/// spelling TF Serving accepts, numbers as numbers).
fn same_value(value: &str, default: &str) -> bool {
    if value == default {
        return true;
    }
    if let (Some(a), Some(b)) = (truthy(value), truthy(default)) {
        return a == b;
    }
    matches!((value.parse::<f64>(), default.parse::<f64>()), (Ok(a), Ok(b)) if a == b)
}

/// Whether the program was started under TF Serving's name.
pub fn invoked_as_tfs(arg0: &std::ffi::OsStr) -> bool {
    Path::new(arg0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == TFS_BINARY)
}

/// Prepares a command line for clap: under TF Serving's name, `serve` is put first;
/// `--version` (`--version=true`) of `serve` prints ferroserve's version, and
/// `--version=false` is dropped; `-name=value` becomes
/// `--name=value` for TF Serving's flags; TF Serving's flags that ferroserve does
/// not support are refused, unless their last value asks for nothing (then they
/// are dropped). Only the `serve` command's arguments are touched.
pub fn normalize_args(args: Vec<OsString>) -> Result<Vec<OsString>, TfsError> {
    let mut args = args.into_iter();
    let mut out: Vec<OsString> = args.next().into_iter().collect();
    let as_tfs = out.first().is_some_and(|a| invoked_as_tfs(a));
    let mut rest: Vec<OsString> = args.collect();
    if as_tfs {
        out.push("serve".into());
    } else {
        // Only `ferroserve serve …` takes TF Serving's flags.
        match rest.first().and_then(|a| a.to_str()) {
            Some("serve") => out.push(rest.remove(0)),
            _ => {
                out.extend(rest);
                return Ok(out);
            }
        }
    }
    // The unsupported flags given, each with its last value: as for every TF
    // Serving flag, a later value replaces an earlier one.
    let mut given: Vec<(&(&str, Accepted, &str), String)> = Vec::new();
    let mut iter = rest.into_iter().peekable();
    while let Some(arg) = iter.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            out.extend(iter);
            break;
        }
        // `-name=value` / `-name` (TF Serving's single dash) for its long flags.
        let body = match text.strip_prefix("--") {
            Some(b) => b,
            None => match text.strip_prefix('-') {
                Some(b) if b.len() > 1 && b.contains('_') || is_tfs_flag(b) => b,
                _ => {
                    out.push(arg);
                    continue;
                }
            },
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        // TF Serving's boolean `--version`: true prints the version, false asks for
        // nothing (under either name: `serve` takes TF Serving's flags).
        if name == "version" {
            match value.as_deref().map_or(Some(true), truthy) {
                Some(true) => out.push("--tfs-version".into()),
                Some(false) => {}
                None => {
                    return Err(fail(format!(
                        "--version={}: give true or false",
                        value.unwrap_or_default()
                    )))
                }
            }
            continue;
        }
        if let Some(entry) = unsupported(name) {
            // A value in the next argument is TF Serving's `--flag value` form.
            let value = match value {
                Some(v) => v,
                None => match iter.peek().and_then(|v| v.to_str()) {
                    Some(v) if !v.starts_with('-') => iter
                        .next()
                        .and_then(|v| v.into_string().ok())
                        .unwrap_or_default(),
                    // A bare boolean flag means true.
                    _ => "true".into(),
                },
            };
            given.retain(|(e, _)| e.0 != entry.0);
            given.push((entry, value));
            continue;
        }
        out.push(format!("--{body}").into());
    }
    for ((flag, accepted, why), value) in given {
        check_unsupported(flag, *accepted, why, &value)?;
    }
    Ok(out)
}

/// Under TF Serving's name the `serve` command is the whole program: its help and
/// usage errors name the program as it was invoked, `tensorflow_model_server
/// [OPTIONS]`, not `tensorflow_model_server serve [OPTIONS]` (which that name does
/// not take). `command` is ferroserve's whole command line.
pub fn usage_as_invoked(command: clap::Command) -> clap::Command {
    command.mut_subcommand("serve", |serve| {
        serve.override_usage(format!("{TFS_BINARY} [OPTIONS]"))
    })
}

fn is_tfs_flag(name: &str) -> bool {
    let name = name.split('=').next().unwrap_or_default();
    matches!(name, "port" | "version") || unsupported(name).is_some()
}

impl TfsArgs {
    /// For a start under TF Serving's name. TF Serving's container image reads
    /// `MODEL_NAME` (default `model`) and `MODEL_BASE_PATH` (default `/models`) and
    /// gives `--model_name=$MODEL_NAME --model_base_path=$MODEL_BASE_PATH/$MODEL_NAME`:
    /// with neither a model nor a config file on the command line, so does
    /// ferroserve when either variable is set. (TF Serving's binary itself reads
    /// neither; with neither set there is no model, and [`TfsArgs::finish`]
    /// refuses to start, as TF Serving does.)
    pub fn with_container_env(mut self, env: impl Fn(&str) -> Option<String>) -> TfsArgs {
        self.under_tfs_name = true;
        if self.model_name.is_some()
            || self.model_base_path.is_some()
            || self.model_config_file.is_some()
        {
            return self;
        }
        let (name, base) = (env("MODEL_NAME"), env("MODEL_BASE_PATH"));
        if name.is_none() && base.is_none() {
            return self;
        }
        let name = name.unwrap_or_else(|| "model".into());
        let base = PathBuf::from(base.unwrap_or_else(|| "/models".into()));
        self.model_base_path = Some(base.join(&name));
        self.model_name = Some(name);
        self.base_path_from_environment = true;
        self
    }

    /// Folds the flags that are ferroserve settings under another name into `args`.
    /// A TF Serving flag overrides the same setting's `FERROSERVE_*` variable
    /// ([`TfsArgs::from_environment`]); giving both forms of one setting as flags is
    /// an error.
    pub fn fold_into(&self, mut args: ServeArgs) -> Result<ServeArgs, TfsError> {
        if self.port == Some(0) {
            return Err(fail(
                "--port=0 would disable gRPC, which ferroserve always serves: give a port",
            ));
        }
        if self.rest_api_port == Some(0) {
            return Err(fail(
                "--rest_api_port=0 would disable REST, which ferroserve always serves: give a port",
            ));
        }
        if self.port.is_some() && self.port == self.rest_api_port {
            return Err(fail("--port and --rest_api_port must differ"));
        }
        let any = |port: u16| std::net::SocketAddr::from(([0, 0, 0, 0], port));
        self.set_once(&mut args.grpc_addr, self.port.map(any), "grpc-addr", "port")?;
        self.set_once(
            &mut args.rest_addr,
            self.rest_api_port.map(any),
            "rest-addr",
            "rest_api_port",
        )?;
        // Checked here, so that the message names the flag given and its value (the
        // setting it becomes is in seconds).
        if let Some(ms) = self.rest_api_timeout_in_ms {
            let most = crate::settings::MAX_REQUEST_TIMEOUT_SECS as u64 * 1000;
            if ms == 0 || ms > most {
                return Err(fail(format!(
                    "--rest_api_timeout_in_ms={ms}: give a number of milliseconds above 0 \
                     and at most {most} (365 days)"
                )));
            }
        }
        self.set_once(
            &mut args.request_timeout_secs,
            self.rest_api_timeout_in_ms.map(|ms| ms as f64 / 1000.0),
            "request-timeout-secs",
            "rest_api_timeout_in_ms",
        )?;
        self.set_once(
            &mut args.model_config_file,
            self.model_config_file.clone(),
            "model-config-file",
            "model_config_file",
        )?;
        let seconds = |v: Option<i64>, name: &str| -> Result<Option<f64>, TfsError> {
            match v {
                Some(s) if s < 0 => Err(fail(format!(
                    "--{name}={s}: negative values are reserved for TF Serving's tests"
                ))),
                other => Ok(other.map(|s| s as f64)),
            }
        };
        self.set_once(
            &mut args.model_config_file_poll_wait_seconds,
            seconds(
                self.model_config_file_poll_wait_seconds,
                "model_config_file_poll_wait_seconds",
            )?,
            "model-config-file-poll-wait-seconds",
            "model_config_file_poll_wait_seconds",
        )?;
        self.set_once(
            &mut args.file_system_poll_wait_seconds,
            seconds(
                self.file_system_poll_wait_seconds,
                "file_system_poll_wait_seconds",
            )?,
            "file-system-poll-wait-seconds",
            "file_system_poll_wait_seconds",
        )?;
        // TF Serving's 0 loads serially; so does one ferroserve load at a time.
        self.set_once(
            &mut args.max_concurrent_loads,
            self.num_load_threads.map(|n| n.max(1)),
            "max-concurrent-loads",
            "num_load_threads",
        )?;
        if let Some(n) = self
            .tensorflow_intra_op_parallelism
            .filter(|n| *n > crate::settings::MAX_THREADS)
        {
            return Err(fail(format!(
                "--tensorflow_intra_op_parallelism={n}: at most {} threads (each ONNX \
                 Runtime session of every model starts that many)",
                crate::settings::MAX_THREADS
            )));
        }
        self.set_once(
            &mut args.onnx_intra_threads,
            self.tensorflow_intra_op_parallelism.filter(|n| *n > 0),
            "onnx-intra-threads",
            "tensorflow_intra_op_parallelism",
        )?;
        if let Some(list) = &self.grpc_channel_arguments {
            let mut given: Vec<&str> = Vec::new();
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (key, value) = item.split_once('=').ok_or_else(|| {
                    fail(format!(
                        "--grpc_channel_arguments: {item:?} is not key=value"
                    ))
                })?;
                let key = key.trim();
                // Both values would be meant for one setting: which one is unclear.
                if given.contains(&key) {
                    return Err(fail(format!(
                        "--grpc_channel_arguments: {key} is given twice: give it once"
                    )));
                }
                given.push(key);
                // A gRPC channel argument is an int: its most, 2147483647, is also
                // protobuf's 2 GiB message limit, and gRPC's -1 ("unlimited") says
                // the same. TF Serving's int parse passes a larger number on as a
                // string, which gRPC ignores: here it is refused.
                let value = value.trim();
                let bytes = match value {
                    "-1" => Some(i32::MAX as usize),
                    _ => value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n <= i32::MAX as usize),
                };
                let bytes = bytes.ok_or_else(|| {
                    fail(format!(
                        "--grpc_channel_arguments: {key} must be a number of bytes from 0 to \
                         2147483647 (or -1, unlimited), not {value:?}"
                    ))
                })?;
                match key {
                    "grpc.max_receive_message_length" => self.set_once(
                        &mut args.grpc_max_receive_bytes,
                        Some(bytes),
                        "grpc-max-receive-bytes",
                        "grpc_channel_arguments",
                    )?,
                    "grpc.max_send_message_length" => self.set_once(
                        &mut args.grpc_max_send_bytes,
                        Some(bytes),
                        "grpc-max-send-bytes",
                        "grpc_channel_arguments",
                    )?,
                    other => {
                        return Err(fail(format!(
                            "--grpc_channel_arguments: {other} is not supported (known: \
                             grpc.max_receive_message_length, grpc.max_send_message_length)"
                        )))
                    }
                }
            }
        }
        Ok(args)
    }

    /// Puts a TF Serving flag's `value` in the `slot` of ferroserve's flag `--ours`:
    /// over a value of the environment, but not over the same setting given as a
    /// flag (an error: which one was meant?).
    fn set_once<T>(
        &self,
        slot: &mut Option<T>,
        value: Option<T>,
        ours: &str,
        theirs: &str,
    ) -> Result<(), TfsError> {
        if let Some(v) = value {
            if slot.is_some() && !self.from_environment.contains(&ours.replace('-', "_")) {
                return Err(fail(format!(
                    "--{theirs} and --{ours} set the same thing: give one"
                )));
            }
            *slot = Some(v);
        }
        Ok(())
    }

    /// Sets what only TF Serving's flags say: the one model, the default batching,
    /// the metrics' second path, the label and warm-up defaults. Reads the batching
    /// and monitoring files. Refuses, as TF Serving does, a model base path that is
    /// not a directory (nothing is created), and, under TF Serving's name, a start
    /// with no model named at all.
    /// What TF Serving's session flags ask of every SavedModel whose config.toml
    /// does not say, as TF Serving's server reads them: all three thread counts
    /// above 0 are refused; else intra- and inter-op threads from their own flags
    /// when either is above 0, from `--tensorflow_session_parallelism` when
    /// neither is. 0 is TensorFlow's choice, the `[tensorflow]` default.
    fn tensorflow_defaults(&self) -> Result<TensorflowDefaults, TfsError> {
        let max = crate::backends::tensorflow::MAX_THREADS;
        let count = |flag: &str, n: Option<usize>| -> Result<u32, TfsError> {
            match u32::try_from(n.unwrap_or(0)) {
                Ok(n) if n <= max => Ok(n),
                _ => Err(fail(format!(
                    "--{flag}={}: at most {max} threads (TensorFlow starts them all when \
                     a SavedModel loads)",
                    n.unwrap_or(0)
                ))),
            }
        };
        let intra = count(
            "tensorflow_intra_op_parallelism",
            self.tensorflow_intra_op_parallelism,
        )?;
        let inter = count(
            "tensorflow_inter_op_parallelism",
            self.tensorflow_inter_op_parallelism,
        )?;
        let session = count(
            "tensorflow_session_parallelism",
            self.tensorflow_session_parallelism,
        )?;
        if intra > 0 && inter > 0 && session > 0 {
            // TF Serving's own words.
            return Err(fail(
                "Either configure --tensorflow_session_parallelism or \
                 (--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) \
                 separately. You cannot configure all.",
            ));
        }
        let (intra, inter) = if intra > 0 || inter > 0 {
            (intra, inter)
        } else {
            (session, session)
        };
        let tags = match &self.saved_model_tags {
            None => None,
            Some(list) => {
                let tags: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect();
                if tags.is_empty() {
                    return Err(fail(format!(
                        "--saved_model_tags={list:?}: give at least one tag (TF Serving's \
                         default: serve)"
                    )));
                }
                Some(tags)
            }
        };
        Ok(TensorflowDefaults {
            tags,
            intra_op_threads: (intra > 0).then_some(intra),
            inter_op_threads: (inter > 0).then_some(inter),
        })
    }

    pub fn finish(&self, settings: &mut Settings) -> Result<(), TfsError> {
        // A model config file that only the environment (FERROSERVE_MODEL_CONFIG_FILE)
        // or the --config file names gives way to --model_base_path on the command
        // line: a flag overrides both. (Both as flags: TF Serving's rule, below.)
        let config_file_is_a_flag = self.model_config_file.is_some()
            || self.from_command_line.contains("model_config_file");
        if self.model_base_path.is_some()
            && !self.base_path_from_environment
            && !config_file_is_a_flag
        {
            if let Some(file) = settings.model_config_file.take() {
                tracing::warn!(
                    "--model_base_path is given: the model config file {} (from the \
                     environment or the --config file) is ignored",
                    file.display()
                );
            }
        }
        match (&self.model_base_path, &self.model_name) {
            (Some(base), name) => {
                if settings.model_config_file.is_some() {
                    // As in TF Serving: the config file wins.
                    tracing::warn!(
                        "--model_config_file is given: --model_name and --model_base_path are ignored"
                    );
                } else {
                    let name = name.clone().unwrap_or_else(|| "default".into());
                    if !crate::model_config_list::is_valid_model_name(&name) {
                        return Err(fail(format!(
                            "--model_name={name:?} is not a valid model name (letters, digits, '.', '_', '-')"
                        )));
                    }
                    check_base_path(base, &name)?;
                    if settings.state_dir.is_none() && settings.database_url.is_none() {
                        settings.state_dir = Some(single_model_state_dir(base, &name)?);
                    }
                    settings.single_model = Some(SingleModel {
                        name,
                        base_path: base.clone(),
                    });
                }
            }
            (None, Some(_)) if settings.model_config_file.is_none() => {
                return Err(fail(
                    "--model_name needs --model_base_path (the directory of the model's versions)",
                ))
            }
            _ => {}
        }
        if self.under_tfs_name
            && settings.single_model.is_none()
            && settings.model_config_file.is_none()
            && settings.model_repository == Settings::default().model_repository
        {
            // TF Serving: "Both server_options.model_base_path and
            // server_options.model_config_file are empty!". Serving ferroserve's
            // `./models` instead could serve models nobody asked for.
            return Err(fail(
                "no model to serve: give --model_base_path (with --model_name) or \
                 --model_config_file, as TF Serving requires (its container image gives \
                 --model_base_path=$MODEL_BASE_PATH/$MODEL_NAME; set MODEL_NAME or \
                 MODEL_BASE_PATH for ferroserve to do the same)",
            ));
        }
        let batching = match (self.enable_batching, &self.batching_parameters_file) {
            (Some(true), Some(file)) => Some(read_batching_parameters(file)?),
            // TF Serving's BatchingParameters with nothing set: its max_batch_size.
            (Some(true), None) => Some(tfs_default_batching()),
            (_, Some(_)) => {
                // TF Serving reads the file only with batching on.
                tracing::warn!("--batching_parameters_file is ignored without --enable_batching");
                None
            }
            _ => None,
        };
        settings.model_defaults.batching = batching;
        if let Some(allow) = self.allow_version_labels_for_unavailable_models {
            settings.model_defaults.allow_unavailable_labels = allow;
        }
        settings.model_defaults.warmup = self.enable_model_warmup;
        settings.model_defaults.tensorflow = self.tensorflow_defaults()?;
        if let Some(file) = &self.monitoring_config_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                fail(format!(
                    "cannot read --monitoring_config_file {}: {e}",
                    file.display()
                ))
            })?;
            settings.metrics_path = parse_monitoring_config(&text)
                .map_err(|e| fail(format!("--monitoring_config_file {}: {e}", file.display())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
