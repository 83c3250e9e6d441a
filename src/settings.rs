//! Server settings: one validated struct, layered defaults → TOML file (`--config`)
//! → environment (`FERROSERVE_…`) → command-line flags.
//!
//! clap resolves the last two layers (a flag wins over its environment variable), so
//! every field of [`ServeArgs`] is an `Option`: `None` means "not given here, keep
//! the lower layer".

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The validated settings every part of the server is configured from.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Root of the model repository, `<repo>/<model>/<version>/`. Default `models`.
    pub model_repository: PathBuf,
    /// TF Serving and KServe V2 REST address. Default `0.0.0.0:8501` (TF Serving's).
    pub rest_addr: SocketAddr,
    /// gRPC address. Default `0.0.0.0:8500` (TF Serving's).
    pub grpc_addr: SocketAddr,
    /// Largest gRPC request message, in bytes; larger is RESOURCE_EXHAUSTED.
    /// Default 64 MiB, as `max_request_bytes`, so what REST takes gRPC takes too.
    pub grpc_max_receive_bytes: usize,
    /// Largest gRPC response message, in bytes; larger is RESOURCE_EXHAUSTED.
    /// Default 64 MiB.
    pub grpc_max_send_bytes: usize,
    /// Deadline of a request when the model config gives none. Default 600 s.
    pub request_timeout: Duration,
    /// Largest request body accepted, in bytes; larger is 413. Default 64 MiB.
    pub max_request_bytes: usize,
    /// Threads that run inference (never the async workers). Default: CPU cores.
    pub inference_threads: usize,
    /// Log line format. Default human.
    pub log_format: LogFormat,
    /// Path to `libonnxruntime.so.1.31.1`. Default: `ORT_DYLIB_PATH`, then next to
    /// the executable.
    pub onnxruntime_path: Option<PathBuf>,
    /// ONNX Runtime intra-op threads per session. Default 1 (fastest for small models).
    pub onnx_intra_threads: usize,
    /// ONNX Runtime sessions per model version, so one model can run on several
    /// inference threads at once. Default 1.
    pub onnx_sessions: usize,
    /// Time between two polls of the model repository for new, removed or changed
    /// versions and configs. Default 1 s; zero disables polling.
    pub file_system_poll_wait: Duration,
    /// A file listing models (ferroserve TOML, or TF Serving's `model_config_list`
    /// text format) served besides the repository's. Default none.
    pub model_config_file: Option<PathBuf>,
    /// Time between two reads of `model_config_file`. Default zero: read at start-up only.
    pub model_config_file_poll_wait: Duration,
    /// Largest model file `POST /upload_model` accepts, in bytes; larger is 413.
    /// Default 1 GiB.
    pub max_upload_bytes: u64,
    /// Deadline of one management operation (upload check and move, reload, deploy,
    /// stop, delete), waiting for the model's lock included; past it the caller gets
    /// 503 (lock busy) or 504, and an operation not yet started never runs. Default 60 s.
    pub management_timeout: Duration,
    /// How long shutdown waits for in-flight requests before closing their
    /// connections. Default 30 s.
    pub shutdown_timeout: Duration,
    /// Most model versions loading at once, across all models. Default: CPU cores.
    pub max_concurrent_loads: usize,
    /// Most versions one model serves, whatever its policy asks; beyond it the highest
    /// ones are served and status says so. Default 100.
    pub max_served_versions_per_model: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            model_repository: PathBuf::from("models"),
            rest_addr: SocketAddr::from(([0, 0, 0, 0], 8501)),
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 8500)),
            grpc_max_receive_bytes: 64 * 1024 * 1024,
            grpc_max_send_bytes: 64 * 1024 * 1024,
            request_timeout: Duration::from_secs(600),
            max_request_bytes: 64 * 1024 * 1024,
            inference_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            log_format: LogFormat::Human,
            onnxruntime_path: None,
            onnx_intra_threads: 1,
            onnx_sessions: 1,
            file_system_poll_wait: Duration::from_secs(1),
            model_config_file: None,
            model_config_file_poll_wait: Duration::ZERO,
            max_upload_bytes: 1024 * 1024 * 1024,
            management_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            max_concurrent_loads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            max_served_versions_per_model: 100,
        }
    }
}

/// Flags of `ferroserve serve`; each also reads `FERROSERVE_<NAME>` from the
/// environment, and the TOML file given by `--config` uses the same names with
/// underscores (`rest_addr = "0.0.0.0:8501"`).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// Root of the model repository: <repo>/<model>/<version>/model.{onnx,pkl,joblib}
    /// [default: models]
    #[arg(long, env = "FERROSERVE_MODEL_REPOSITORY", value_name = "DIR")]
    pub model_repository: Option<PathBuf>,

    /// Address of the TF Serving / KServe V2 REST API [default: 0.0.0.0:8501]
    #[arg(long, env = "FERROSERVE_REST_ADDR", value_name = "HOST:PORT")]
    pub rest_addr: Option<SocketAddr>,

    /// Address of the gRPC API [default: 0.0.0.0:8500]
    #[arg(long, env = "FERROSERVE_GRPC_ADDR", value_name = "HOST:PORT")]
    pub grpc_addr: Option<SocketAddr>,

    /// Largest gRPC request message in bytes; larger is RESOURCE_EXHAUSTED [default: 67108864]
    #[arg(long, env = "FERROSERVE_GRPC_MAX_RECEIVE_BYTES", value_name = "BYTES")]
    pub grpc_max_receive_bytes: Option<usize>,

    /// Largest gRPC response message in bytes [default: 67108864]
    #[arg(long, env = "FERROSERVE_GRPC_MAX_SEND_BYTES", value_name = "BYTES")]
    pub grpc_max_send_bytes: Option<usize>,

    /// Request deadline in seconds when the model's config.toml gives none; counts
    /// queue time and inference [default: 600]
    #[arg(long, env = "FERROSERVE_REQUEST_TIMEOUT_SECS", value_name = "SECONDS")]
    pub request_timeout_secs: Option<f64>,

    /// Largest request body in bytes; larger bodies get 413 [default: 67108864]
    #[arg(long, env = "FERROSERVE_MAX_REQUEST_BYTES", value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,

    /// Number of inference threads [default: number of CPU cores]
    #[arg(long, env = "FERROSERVE_INFERENCE_THREADS", value_name = "N")]
    pub inference_threads: Option<usize>,

    /// Log format [default: human]
    #[arg(long, env = "FERROSERVE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Path to libonnxruntime.so.1.31.1 [default: $ORT_DYLIB_PATH, then next to the executable]
    #[arg(long, env = "FERROSERVE_ONNXRUNTIME_PATH", value_name = "FILE")]
    pub onnxruntime_path: Option<PathBuf>,

    /// ONNX Runtime intra-op threads per session [default: 1]
    #[arg(long, env = "FERROSERVE_ONNX_INTRA_THREADS", value_name = "N")]
    pub onnx_intra_threads: Option<usize>,

    /// ONNX Runtime sessions per model version [default: 1]
    #[arg(long, env = "FERROSERVE_ONNX_SESSIONS", value_name = "N")]
    pub onnx_sessions: Option<usize>,

    /// Seconds between two polls of the model repository; 0 disables polling [default: 1]
    #[arg(
        long,
        env = "FERROSERVE_FILE_SYSTEM_POLL_WAIT_SECONDS",
        value_name = "SECONDS"
    )]
    pub file_system_poll_wait_seconds: Option<f64>,

    /// File listing models to serve: ferroserve TOML (*.toml) or TF Serving's
    /// model_config_list text format
    #[arg(long, env = "FERROSERVE_MODEL_CONFIG_FILE", value_name = "FILE")]
    pub model_config_file: Option<PathBuf>,

    /// Seconds between two reads of --model-config-file; 0 reads it once [default: 0]
    #[arg(
        long,
        env = "FERROSERVE_MODEL_CONFIG_FILE_POLL_WAIT_SECONDS",
        value_name = "SECONDS"
    )]
    pub model_config_file_poll_wait_seconds: Option<f64>,

    /// Largest model file POST /upload_model accepts, in bytes [default: 1073741824]
    #[arg(long, env = "FERROSERVE_MAX_UPLOAD_BYTES", value_name = "BYTES")]
    pub max_upload_bytes: Option<u64>,

    /// Deadline in seconds of one management operation, waiting for the model's lock
    /// included [default: 60]
    #[arg(
        long = "management-timeout",
        alias = "management-timeout-secs",
        env = "FERROSERVE_MANAGEMENT_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub management_timeout_secs: Option<f64>,

    /// Seconds shutdown waits for in-flight requests before closing them [default: 30]
    #[arg(
        long = "shutdown-timeout",
        alias = "shutdown-timeout-secs",
        env = "FERROSERVE_SHUTDOWN_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub shutdown_timeout_secs: Option<f64>,

    /// Most model versions loading at once [default: number of CPU cores]
    #[arg(long, env = "FERROSERVE_MAX_CONCURRENT_LOADS", value_name = "N")]
    pub max_concurrent_loads: Option<usize>,

    /// Most versions one model serves, whatever its policy asks [default: 100]
    #[arg(
        long,
        env = "FERROSERVE_MAX_SERVED_VERSIONS_PER_MODEL",
        value_name = "N"
    )]
    pub max_served_versions_per_model: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid setting {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl ServeArgs {
    /// Reads a TOML config file with the same keys as the flags.
    pub fn from_toml_file(path: &Path) -> Result<ServeArgs, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| SettingsError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Overrides `self` with every value `upper` gives.
    pub fn overridden_by(self, upper: ServeArgs) -> ServeArgs {
        ServeArgs {
            model_repository: upper.model_repository.or(self.model_repository),
            rest_addr: upper.rest_addr.or(self.rest_addr),
            grpc_addr: upper.grpc_addr.or(self.grpc_addr),
            grpc_max_receive_bytes: upper.grpc_max_receive_bytes.or(self.grpc_max_receive_bytes),
            grpc_max_send_bytes: upper.grpc_max_send_bytes.or(self.grpc_max_send_bytes),
            request_timeout_secs: upper.request_timeout_secs.or(self.request_timeout_secs),
            max_request_bytes: upper.max_request_bytes.or(self.max_request_bytes),
            inference_threads: upper.inference_threads.or(self.inference_threads),
            log_format: upper.log_format.or(self.log_format),
            onnxruntime_path: upper.onnxruntime_path.or(self.onnxruntime_path),
            onnx_intra_threads: upper.onnx_intra_threads.or(self.onnx_intra_threads),
            onnx_sessions: upper.onnx_sessions.or(self.onnx_sessions),
            file_system_poll_wait_seconds: upper
                .file_system_poll_wait_seconds
                .or(self.file_system_poll_wait_seconds),
            model_config_file: upper.model_config_file.or(self.model_config_file),
            model_config_file_poll_wait_seconds: upper
                .model_config_file_poll_wait_seconds
                .or(self.model_config_file_poll_wait_seconds),
            max_upload_bytes: upper.max_upload_bytes.or(self.max_upload_bytes),
            management_timeout_secs: upper
                .management_timeout_secs
                .or(self.management_timeout_secs),
            shutdown_timeout_secs: upper.shutdown_timeout_secs.or(self.shutdown_timeout_secs),
            max_concurrent_loads: upper.max_concurrent_loads.or(self.max_concurrent_loads),
            max_served_versions_per_model: upper
                .max_served_versions_per_model
                .or(self.max_served_versions_per_model),
        }
    }

    /// Applies the given values over the defaults and validates the result.
    pub fn into_settings(self) -> Result<Settings, SettingsError> {
        let d = Settings::default();
        let positive = |name: &'static str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(SettingsError::Invalid {
                name,
                reason: "must be at least 1".into(),
            }),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let request_timeout = match self.request_timeout_secs {
            None => d.request_timeout,
            Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 * 365.0 => {
                Duration::from_secs_f64(s)
            }
            Some(s) => {
                return Err(SettingsError::Invalid {
                    name: "request_timeout_secs",
                    reason: format!("{s} is not a positive number of seconds"),
                })
            }
        };
        let poll_wait = |name: &'static str, v: Option<f64>, default: Duration| match v {
            None => Ok(default),
            Some(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => {
                Ok(Duration::from_secs_f64(s))
            }
            Some(s) => Err(SettingsError::Invalid {
                name,
                reason: format!("{s} is not a number of seconds between 0 and 86400"),
            }),
        };
        let max_upload_bytes = match self.max_upload_bytes {
            Some(0) => {
                return Err(SettingsError::Invalid {
                    name: "max_upload_bytes",
                    reason: "must be at least 1".into(),
                })
            }
            Some(n) => n,
            None => d.max_upload_bytes,
        };
        // A deadline of zero would refuse every operation; a day is more than any wants.
        let seconds = |name: &'static str, v: Option<f64>, default: Duration| match v {
            None => Ok(default),
            Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
            Some(s) => Err(SettingsError::Invalid {
                name,
                reason: format!("{s} is not a positive number of seconds (at most 86400)"),
            }),
        };
        Ok(Settings {
            management_timeout: seconds(
                "management_timeout_secs",
                self.management_timeout_secs,
                d.management_timeout,
            )?,
            shutdown_timeout: seconds(
                "shutdown_timeout_secs",
                self.shutdown_timeout_secs,
                d.shutdown_timeout,
            )?,
            max_concurrent_loads: positive(
                "max_concurrent_loads",
                self.max_concurrent_loads,
                d.max_concurrent_loads,
            )?,
            max_served_versions_per_model: positive(
                "max_served_versions_per_model",
                self.max_served_versions_per_model,
                d.max_served_versions_per_model,
            )?,
            file_system_poll_wait: poll_wait(
                "file_system_poll_wait_seconds",
                self.file_system_poll_wait_seconds,
                d.file_system_poll_wait,
            )?,
            model_config_file: self.model_config_file.or(d.model_config_file),
            model_config_file_poll_wait: poll_wait(
                "model_config_file_poll_wait_seconds",
                self.model_config_file_poll_wait_seconds,
                d.model_config_file_poll_wait,
            )?,
            max_upload_bytes,
            model_repository: self.model_repository.unwrap_or(d.model_repository),
            rest_addr: self.rest_addr.unwrap_or(d.rest_addr),
            grpc_addr: self.grpc_addr.unwrap_or(d.grpc_addr),
            grpc_max_receive_bytes: positive(
                "grpc_max_receive_bytes",
                self.grpc_max_receive_bytes,
                d.grpc_max_receive_bytes,
            )?,
            grpc_max_send_bytes: positive(
                "grpc_max_send_bytes",
                self.grpc_max_send_bytes,
                d.grpc_max_send_bytes,
            )?,
            request_timeout,
            max_request_bytes: positive(
                "max_request_bytes",
                self.max_request_bytes,
                d.max_request_bytes,
            )?,
            inference_threads: positive(
                "inference_threads",
                self.inference_threads,
                d.inference_threads,
            )?,
            log_format: self.log_format.unwrap_or(d.log_format),
            onnxruntime_path: self.onnxruntime_path.or(d.onnxruntime_path),
            onnx_intra_threads: positive(
                "onnx_intra_threads",
                self.onnx_intra_threads,
                d.onnx_intra_threads,
            )?,
            onnx_sessions: positive("onnx_sessions", self.onnx_sessions, d.onnx_sessions)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let file: ServeArgs = toml::from_str(
            "rest_addr = \"127.0.0.1:9000\"\nrequest_timeout_secs = 5\ninference_threads = 3",
        )
        .unwrap();
        let flags = ServeArgs {
            inference_threads: Some(7),
            ..ServeArgs::default()
        };
        let s = file.overridden_by(flags).into_settings().unwrap();
        assert_eq!(s.rest_addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(s.request_timeout, Duration::from_secs(5));
        assert_eq!(s.inference_threads, 7, "flag overrides file");
        assert_eq!(s.grpc_addr.port(), 8500, "default kept");
    }

    #[test]
    fn invalid_values_are_refused() {
        let zero = ServeArgs {
            inference_threads: Some(0),
            ..ServeArgs::default()
        };
        assert!(zero
            .into_settings()
            .unwrap_err()
            .to_string()
            .contains("inference_threads"));
        let neg = ServeArgs {
            request_timeout_secs: Some(-1.0),
            ..ServeArgs::default()
        };
        assert!(neg.into_settings().is_err());
        assert!(toml::from_str::<ServeArgs>("no_such_key = 1").is_err());
    }

    #[test]
    fn watcher_and_upload_settings() {
        let d = ServeArgs::default().into_settings().unwrap();
        assert_eq!(d.file_system_poll_wait, Duration::from_secs(1));
        assert_eq!(d.model_config_file_poll_wait, Duration::ZERO);
        assert_eq!(d.model_config_file, None);
        assert_eq!(d.management_timeout, Duration::from_secs(60));
        assert_eq!(d.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(d.max_served_versions_per_model, 100);
        assert!(d.max_concurrent_loads >= 1);
        let file: ServeArgs = toml::from_str(
            "management_timeout_secs = 2.5\nshutdown_timeout_secs = 1\n\
             max_concurrent_loads = 3\nmax_served_versions_per_model = 7",
        )
        .unwrap();
        let s = file.into_settings().unwrap();
        assert_eq!(s.management_timeout, Duration::from_millis(2500));
        assert_eq!(s.shutdown_timeout, Duration::from_secs(1));
        assert_eq!(
            (s.max_concurrent_loads, s.max_served_versions_per_model),
            (3, 7)
        );
        let file: ServeArgs = toml::from_str(
            "file_system_poll_wait_seconds = 0\nmodel_config_file = \"m.config\"\n\
             model_config_file_poll_wait_seconds = 2.5\nmax_upload_bytes = 10",
        )
        .unwrap();
        let s = file.into_settings().unwrap();
        assert_eq!(
            s.file_system_poll_wait,
            Duration::ZERO,
            "0 disables polling"
        );
        assert_eq!(s.model_config_file_poll_wait, Duration::from_millis(2500));
        assert_eq!(s.model_config_file.as_deref(), Some(Path::new("m.config")));
        assert_eq!(s.max_upload_bytes, 10);
        for bad in [
            "file_system_poll_wait_seconds = -1",
            "model_config_file_poll_wait_seconds = nan",
            "max_upload_bytes = 0",
            "management_timeout_secs = 0",
            "shutdown_timeout_secs = -1",
            "max_concurrent_loads = 0",
            "max_served_versions_per_model = 0",
        ] {
            let args: ServeArgs = toml::from_str(bad).unwrap();
            assert!(args.into_settings().is_err(), "{bad}");
        }
    }
}
