//! `ferroserve serve`'s flags ([`ServeArgs`]) and their layering: the TOML file,
//! then the environment and the command line (clap), checked into [`Settings`].

use super::env::name_variables_in_errors;
use super::*;

/// Checks a `public_url`: `http://` or `https://`, a host, an optional port and path,
/// nothing else (no spaces, query, fragment or user info). Gives it without a
/// trailing `/`.
fn parse_public_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} does not start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~:/[]%".contains(c);
    if host.is_empty() || host.starts_with(':') || !rest.chars().all(allowed) {
        return Err(format!(
            "{url:?} is not a URL of the form http[s]://host[:port][/path]"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Flags of `ferroserve serve`; each also reads `FERROSERVE_<NAME>` from the
/// environment, and the TOML file given by `--config` uses the same names with
/// underscores (`rest_addr = "0.0.0.0:8501"`).
// Doc comments here are also clap's --help text, written for a terminal: `<dir>`
// placeholders and `[default: …]` are not HTML or intra-doc links.
#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[command(mut_args = name_variables_in_errors)]
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

    /// Most request-body bytes (REST and gRPC) held at once across all requests
    /// being received; a body that would pass it fails with 503 (gRPC:
    /// RESOURCE_EXHAUSTED). At least the largest body --max-request-bytes and
    /// --grpc-max-receive-bytes allow [default: 1073741824, or that largest body if
    /// more]
    #[arg(long, env = "FERROSERVE_MAX_INFLIGHT_BODY_BYTES", value_name = "BYTES")]
    pub max_inflight_body_bytes: Option<u64>,

    /// Number of inference threads, at most 1024 [default: number of CPU cores]
    #[arg(long, env = "FERROSERVE_INFERENCE_THREADS", value_name = "N")]
    pub inference_threads: Option<usize>,

    /// Log format [default: human]
    #[arg(long, env = "FERROSERVE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Path to libonnxruntime.so.1.31.1 [default: $ORT_DYLIB_PATH, then next to the executable]
    #[arg(long, env = "FERROSERVE_ONNXRUNTIME_PATH", value_name = "FILE")]
    pub onnxruntime_path: Option<PathBuf>,

    /// ONNX Runtime intra-op threads per session, at most 1024 (and sessions × threads
    /// at most 1024) [default: 1]
    #[arg(long, env = "FERROSERVE_ONNX_INTRA_THREADS", value_name = "N")]
    pub onnx_intra_threads: Option<usize>,

    /// ONNX Runtime sessions per model version [default: 1]
    #[arg(long, env = "FERROSERVE_ONNX_SESSIONS", value_name = "N")]
    pub onnx_sessions: Option<usize>,

    /// Directory of TensorFlow's libraries (libtensorflow_cc.so.2) [default: next to the executable]
    #[arg(long, env = "FERROSERVE_TENSORFLOW_PATH", value_name = "DIR")]
    pub tensorflow_path: Option<PathBuf>,

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

    /// Largest model file POST /upload_model accepts, and files one job request uploads, in bytes [default: 1073741824]
    #[arg(long, env = "FERROSERVE_MAX_UPLOAD_BYTES", value_name = "BYTES")]
    pub max_upload_bytes: Option<u64>,

    /// TOML file of bearer tokens with scopes (inference, management, metrics),
    /// re-read when it changes; `ferroserve token new` makes entries [default: none:
    /// inference open, management from loopback clients only]
    #[arg(long, env = "FERROSERVE_AUTH_TOKENS", value_name = "FILE")]
    pub auth_tokens: Option<PathBuf>,

    /// Without --auth-tokens, allow management (upload, reload, deploy, stop, delete)
    /// from any client, not only from the server's own host (refused with
    /// --auth-tokens) [default: false]
    #[arg(
        long,
        env = "FERROSERVE_ALLOW_UNAUTHENTICATED_MANAGEMENT",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub allow_unauthenticated_management: Option<bool>,

    /// /metrics needs a token with the `metrics` scope (needs --auth-tokens) [default: false]
    #[arg(
        long,
        env = "FERROSERVE_METRICS_REQUIRE_TOKEN",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub metrics_require_token: Option<bool>,

    /// Directories besides the model repository that model base paths (model config
    /// file, gRPC ReloadConfig) must lie under, comma-separated [default: the config
    /// file's directory]
    #[arg(
        long,
        env = "FERROSERVE_ALLOWED_MODEL_ROOTS",
        value_name = "DIR,...",
        value_delimiter = ','
    )]
    pub allowed_model_roots: Option<Vec<PathBuf>>,

    /// PEM certificate chain; with --tls-key, REST and gRPC serve TLS only. Re-read
    /// when the file changes [default: none, plain TCP]
    #[arg(long, env = "FERROSERVE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert [default: none]
    #[arg(long, env = "FERROSERVE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates; clients must present a certificate signed by one of
    /// them (mutual TLS) [default: none]
    #[arg(long, env = "FERROSERVE_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Most rows (dimension 0) one predict request may carry; a model's config.toml
    /// may set its own max_request_rows [default: 65536]
    #[arg(long, env = "FERROSERVE_MAX_REQUEST_ROWS", value_name = "ROWS")]
    pub max_request_rows: Option<usize>,

    /// Largest answer one predict request may produce, in bytes, estimated before
    /// encoding [default: 67108864]
    #[arg(long, env = "FERROSERVE_MAX_RESPONSE_BYTES", value_name = "BYTES")]
    pub max_response_bytes: Option<usize>,

    /// Most concurrent calls (HTTP/2 streams) per gRPC connection [default: 256]
    #[arg(long, env = "FERROSERVE_GRPC_MAX_CONCURRENT_STREAMS", value_name = "N")]
    pub grpc_max_concurrent_streams: Option<u32>,

    /// Seconds a gRPC response may wait for its client to read it before the call
    /// is reset [default: 30]
    #[arg(
        long,
        env = "FERROSERVE_GRPC_SEND_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub grpc_send_timeout_secs: Option<f64>,
    /// URL clients reach the REST API at, used in the URLs answers give (/deploy's
    /// service_url, status endpoints) [default: http:// and --rest-addr, 0.0.0.0 as 127.0.0.1]
    #[arg(long, env = "FERROSERVE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Metadata store: sqlite://FILE, postgres://USER:PASSWORD@HOST/DB or
    /// mysql://… (MariaDB too) [default: sqlite://<state dir>/ferroserve.db]
    #[arg(long, env = "FERROSERVE_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Directory for the server's own files, such as the default SQLite database
    /// [default: <model repository>/.ferroserve]
    #[arg(long, env = "FERROSERVE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Longest wait in seconds for the database: connecting at start, and each
    /// write a management call makes [default: 5]
    #[arg(long, env = "FERROSERVE_DATABASE_TIMEOUT_SECS", value_name = "SECONDS")]
    pub database_timeout_secs: Option<f64>,
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
    /// Seconds to keep serving, not ready, after the stop signal before the
    /// listeners close (for load balancers to notice) [default: 0]
    #[arg(
        long = "shutdown-delay",
        alias = "shutdown-delay-secs",
        env = "FERROSERVE_SHUTDOWN_DELAY_SECS",
        value_name = "SECONDS"
    )]
    pub shutdown_delay_secs: Option<f64>,

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

    /// Most connections open at once across both listeners; at the limit idle ones
    /// are closed to make room, and with none idle new ones wait in the listen
    /// backlog [default: the open-files limit less a reserve of 10 %, at least 256]
    #[arg(long, env = "FERROSERVE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Seconds a client may take to send a request head before its connection is
    /// closed [default: 10]
    #[arg(
        long,
        env = "FERROSERVE_HEADER_READ_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub header_read_timeout_secs: Option<f64>,

    /// Seconds a REST connection may stay without a request in progress [default: 60]
    #[arg(
        long,
        env = "FERROSERVE_KEEP_ALIVE_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub keep_alive_timeout_secs: Option<f64>,

    /// Seconds a request body (REST) or message (gRPC) may stop arriving before the
    /// request fails (REST: 408, gRPC: DEADLINE_EXCEEDED); also the grace before a
    /// body must average 500 bytes/s [default: 30]
    #[arg(
        long,
        env = "FERROSERVE_BODY_READ_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub body_read_timeout_secs: Option<f64>,

    /// Seconds a REST answer may wait for its client to read it before the
    /// connection is closed [default: 30]
    #[arg(long, env = "FERROSERVE_SEND_TIMEOUT_SECS", value_name = "SECONDS")]
    pub send_timeout_secs: Option<f64>,

    /// Largest request head in bytes (HTTP/1 headers: more is 431; HTTP/2 header
    /// list); at least 8192 [default: 65536]
    #[arg(long, env = "FERROSERVE_MAX_HEADER_BYTES", value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,

    /// Most concurrent HTTP/2 streams per REST connection [default: 256]
    #[arg(long, env = "FERROSERVE_REST_MAX_CONCURRENT_STREAMS", value_name = "N")]
    pub rest_max_concurrent_streams: Option<u32>,

    /// Seconds between HTTP/2 keep-alive pings (REST and gRPC); 0 sends none [default: 60]
    #[arg(
        long,
        env = "FERROSERVE_HTTP2_KEEP_ALIVE_INTERVAL_SECS",
        value_name = "SECONDS"
    )]
    pub http2_keep_alive_interval_secs: Option<f64>,

    /// Seconds an HTTP/2 ping may go unanswered before the connection is closed
    /// [default: 20]
    #[arg(
        long,
        env = "FERROSERVE_HTTP2_KEEP_ALIVE_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub http2_keep_alive_timeout_secs: Option<f64>,

    /// Most HTTP/2 streams a client may reset before the server accepted them, per
    /// connection; more closes it [default: 20]
    #[arg(
        long,
        env = "FERROSERVE_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS",
        value_name = "N"
    )]
    pub http2_max_pending_accept_reset_streams: Option<usize>,

    /// Seconds a gRPC connection may stay with no call in progress [default: 300]
    #[arg(
        long,
        env = "FERROSERVE_GRPC_IDLE_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub grpc_idle_timeout_secs: Option<f64>,

    /// Bytes of answers the in-process response cache keeps (models with `[cache]
    /// enabled = true`); 0 turns the in-process tier off [default: 268435456]
    #[arg(long, env = "FERROSERVE_CACHE_MAX_BYTES", value_name = "BYTES")]
    pub cache_max_bytes: Option<u64>,

    /// Redis server used as a shared second response-cache tier,
    /// redis://[user:password@]host:port[/db] [default: none]
    #[arg(long, env = "FERROSERVE_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,

    /// Milliseconds a request waits for a Redis cache lookup before going on without
    /// it, between 1 and 10000 [default: 5]
    #[arg(long, env = "FERROSERVE_REDIS_TIMEOUT_MS", value_name = "MILLISECONDS")]
    pub redis_timeout_ms: Option<u64>,

    /// Jobs (training, batch scoring) running at once; the others wait queued
    /// [default: 1]
    #[arg(long, env = "FERROSERVE_JOB_WORKERS", value_name = "N")]
    pub job_workers: Option<usize>,
    /// Days finished jobs are kept before they are deleted [default: 30]
    #[arg(
        long = "job-retention",
        alias = "job-retention-days",
        env = "FERROSERVE_JOB_RETENTION_DAYS",
        value_name = "DAYS"
    )]
    pub job_retention_days: Option<f64>,
    /// Seconds a queued job with uploaded files waits for the server that holds
    /// them, silent, before another replica fails it [default: 600]
    #[arg(long, env = "FERROSERVE_UPLOAD_JOB_GRACE_SECS", value_name = "SECONDS")]
    pub upload_job_grace_secs: Option<u64>,
    /// Most rows a training job reads [default: 1000000]
    #[arg(long, env = "FERROSERVE_TRAIN_MAX_ROWS", value_name = "N")]
    pub train_max_rows: Option<usize>,
    /// Most distinct values of a categorical feature a training job learns
    /// [default: 1000]
    #[arg(long, env = "FERROSERVE_MAX_CATEGORIES", value_name = "N")]
    pub max_categories: Option<usize>,
    /// Directory jobs read and write files in; a job's path must lie under it
    /// [default: <state dir>/data]
    #[arg(long, env = "FERROSERVE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Ports for deployed models' worker processes, FIRST-LAST; "off" serves
    /// deployments in-process [default: 8000-8999]
    #[arg(long, env = "FERROSERVE_WORKER_PORTS", value_name = "FIRST-LAST")]
    pub worker_ports: Option<String>,
    /// Address the workers bind [default: 127.0.0.1]
    #[arg(long, env = "FERROSERVE_WORKER_BIND", value_name = "IP")]
    pub worker_bind: Option<std::net::IpAddr>,
    /// Serve the registry (/registry/services) on this address too, as the old
    /// service's registry did on port 5050 [default: none]
    #[arg(long, env = "FERROSERVE_REGISTRY_ADDR", value_name = "HOST:PORT")]
    pub registry_addr: Option<SocketAddr>,
    /// Let workers' limits use cgroup v1 groups where writable; false leaves memory to
    /// an rlimit plus the RSS watchdog and cpu to core affinity [default: true]
    #[arg(long, env = "FERROSERVE_WORKER_CGROUPS", value_name = "BOOL")]
    pub worker_cgroups: Option<bool>,
    /// Seconds a deployed model's worker may take to serve its model before it is
    /// killed and started again [default: 120]
    #[arg(
        long = "worker-start-timeout",
        alias = "worker-start-timeout-secs",
        env = "FERROSERVE_WORKER_START_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub worker_start_timeout_secs: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Told without the file's text ([`crate::toml_error::without_text`]).
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
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
        toml::from_str(&text).map_err(|e| {
            // The file's keys are the flags' names with underscores.
            let command = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
            let keys: Vec<&str> = command
                .get_arguments()
                .map(|a| a.get_id().as_str())
                .collect();
            SettingsError::Parse {
                path: path.to_path_buf(),
                message: crate::toml_error::without_text(&e, &text, &keys),
            }
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
            max_inflight_body_bytes: upper
                .max_inflight_body_bytes
                .or(self.max_inflight_body_bytes),
            inference_threads: upper.inference_threads.or(self.inference_threads),
            log_format: upper.log_format.or(self.log_format),
            onnxruntime_path: upper.onnxruntime_path.or(self.onnxruntime_path),
            onnx_intra_threads: upper.onnx_intra_threads.or(self.onnx_intra_threads),
            onnx_sessions: upper.onnx_sessions.or(self.onnx_sessions),
            tensorflow_path: upper.tensorflow_path.or(self.tensorflow_path),
            file_system_poll_wait_seconds: upper
                .file_system_poll_wait_seconds
                .or(self.file_system_poll_wait_seconds),
            model_config_file: upper.model_config_file.or(self.model_config_file),
            model_config_file_poll_wait_seconds: upper
                .model_config_file_poll_wait_seconds
                .or(self.model_config_file_poll_wait_seconds),
            max_upload_bytes: upper.max_upload_bytes.or(self.max_upload_bytes),
            auth_tokens: upper.auth_tokens.or(self.auth_tokens),
            allow_unauthenticated_management: upper
                .allow_unauthenticated_management
                .or(self.allow_unauthenticated_management),
            metrics_require_token: upper.metrics_require_token.or(self.metrics_require_token),
            allowed_model_roots: upper.allowed_model_roots.or(self.allowed_model_roots),
            tls_cert: upper.tls_cert.or(self.tls_cert),
            tls_key: upper.tls_key.or(self.tls_key),
            tls_client_ca: upper.tls_client_ca.or(self.tls_client_ca),
            max_request_rows: upper.max_request_rows.or(self.max_request_rows),
            max_response_bytes: upper.max_response_bytes.or(self.max_response_bytes),
            grpc_max_concurrent_streams: upper
                .grpc_max_concurrent_streams
                .or(self.grpc_max_concurrent_streams),
            grpc_send_timeout_secs: upper.grpc_send_timeout_secs.or(self.grpc_send_timeout_secs),
            public_url: upper.public_url.or(self.public_url),
            database_url: upper.database_url.or(self.database_url),
            state_dir: upper.state_dir.or(self.state_dir),
            database_timeout_secs: upper.database_timeout_secs.or(self.database_timeout_secs),
            management_timeout_secs: upper
                .management_timeout_secs
                .or(self.management_timeout_secs),
            shutdown_timeout_secs: upper.shutdown_timeout_secs.or(self.shutdown_timeout_secs),
            shutdown_delay_secs: upper.shutdown_delay_secs.or(self.shutdown_delay_secs),
            max_concurrent_loads: upper.max_concurrent_loads.or(self.max_concurrent_loads),
            max_served_versions_per_model: upper
                .max_served_versions_per_model
                .or(self.max_served_versions_per_model),
            max_connections: upper.max_connections.or(self.max_connections),
            header_read_timeout_secs: upper
                .header_read_timeout_secs
                .or(self.header_read_timeout_secs),
            keep_alive_timeout_secs: upper
                .keep_alive_timeout_secs
                .or(self.keep_alive_timeout_secs),
            body_read_timeout_secs: upper.body_read_timeout_secs.or(self.body_read_timeout_secs),
            send_timeout_secs: upper.send_timeout_secs.or(self.send_timeout_secs),
            max_header_bytes: upper.max_header_bytes.or(self.max_header_bytes),
            rest_max_concurrent_streams: upper
                .rest_max_concurrent_streams
                .or(self.rest_max_concurrent_streams),
            http2_keep_alive_interval_secs: upper
                .http2_keep_alive_interval_secs
                .or(self.http2_keep_alive_interval_secs),
            http2_keep_alive_timeout_secs: upper
                .http2_keep_alive_timeout_secs
                .or(self.http2_keep_alive_timeout_secs),
            http2_max_pending_accept_reset_streams: upper
                .http2_max_pending_accept_reset_streams
                .or(self.http2_max_pending_accept_reset_streams),
            grpc_idle_timeout_secs: upper.grpc_idle_timeout_secs.or(self.grpc_idle_timeout_secs),
            cache_max_bytes: upper.cache_max_bytes.or(self.cache_max_bytes),
            redis_url: upper.redis_url.or(self.redis_url),
            redis_timeout_ms: upper.redis_timeout_ms.or(self.redis_timeout_ms),
            job_workers: upper.job_workers.or(self.job_workers),
            job_retention_days: upper.job_retention_days.or(self.job_retention_days),
            upload_job_grace_secs: upper.upload_job_grace_secs.or(self.upload_job_grace_secs),
            train_max_rows: upper.train_max_rows.or(self.train_max_rows),
            max_categories: upper.max_categories.or(self.max_categories),
            data_dir: upper.data_dir.or(self.data_dir),
            worker_ports: upper.worker_ports.or(self.worker_ports),
            worker_bind: upper.worker_bind.or(self.worker_bind),
            registry_addr: upper.registry_addr.or(self.registry_addr),
            worker_cgroups: upper.worker_cgroups.or(self.worker_cgroups),
            worker_start_timeout_secs: upper
                .worker_start_timeout_secs
                .or(self.worker_start_timeout_secs),
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
        // A thread count: at least 1, at most `MAX_THREADS`.
        let threads = |name: &'static str, v: Option<usize>, default: usize| match v {
            Some(n) if n > super::MAX_THREADS => Err(SettingsError::Invalid {
                name,
                reason: format!(
                    "{n} threads is more than the {} allowed",
                    super::MAX_THREADS
                ),
            }),
            other => positive(name, other, default),
        };
        let onnx_intra_threads = threads(
            "onnx_intra_threads",
            self.onnx_intra_threads,
            d.onnx_intra_threads,
        )?;
        let onnx_sessions = threads("onnx_sessions", self.onnx_sessions, d.onnx_sessions)?;
        if onnx_intra_threads * onnx_sessions > super::MAX_THREADS {
            return Err(SettingsError::Invalid {
                name: "onnx_sessions",
                reason: format!(
                    "{onnx_sessions} sessions of {onnx_intra_threads} intra-op threads each \
                     would start {} threads per model version, more than the {} allowed",
                    onnx_intra_threads * onnx_sessions,
                    super::MAX_THREADS
                ),
            });
        }
        let request_timeout = match self.request_timeout_secs {
            None => d.request_timeout,
            Some(s) => super::deadline(s, super::MAX_REQUEST_TIMEOUT_SECS).ok_or_else(|| {
                SettingsError::Invalid {
                    name: "request_timeout_secs",
                    reason: format!(
                        "{s} is not a number of seconds above 0 and at most {}",
                        super::MAX_REQUEST_TIMEOUT_SECS
                    ),
                }
            })?,
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
        let max_request_bytes = positive(
            "max_request_bytes",
            self.max_request_bytes,
            d.max_request_bytes,
        )?;
        let grpc_max_receive_bytes = positive(
            "grpc_max_receive_bytes",
            self.grpc_max_receive_bytes,
            d.grpc_max_receive_bytes,
        )?;
        // One body of the largest size allowed must always fit alone, or a legal
        // request would be refused on an idle server.
        let largest_body = max_request_bytes.max(grpc_max_receive_bytes) as u64;
        let max_inflight_body_bytes = match self.max_inflight_body_bytes {
            None => d.max_inflight_body_bytes.max(largest_body),
            Some(n) if n < largest_body => {
                return Err(SettingsError::Invalid {
                    name: "max_inflight_body_bytes",
                    reason: format!(
                        "{n} is less than the largest request body allowed \
                         ({largest_body} bytes, by max_request_bytes or \
                         grpc_max_receive_bytes), which could then never be received"
                    ),
                })
            }
            Some(n) => n,
        };
        // A deadline or timeout: zero would refuse everything; a day is more than any
        // wants.
        let seconds = |name: &'static str, v: Option<f64>, default: Duration| match v {
            None => Ok(default),
            Some(s) => super::deadline(s, 86_400.0).ok_or_else(|| SettingsError::Invalid {
                name,
                reason: format!("{s} is not a number of seconds above 0 and at most 86400"),
            }),
        };
        let public_url = match self.public_url {
            None => d.public_url,
            Some(url) => Some(
                parse_public_url(&url).map_err(|reason| SettingsError::Invalid {
                    name: "public_url",
                    reason,
                })?,
            ),
        };
        let grpc_send_timeout = seconds(
            "grpc_send_timeout_secs",
            self.grpc_send_timeout_secs,
            d.grpc_send_timeout,
        )?;
        let grpc_max_concurrent_streams = match self.grpc_max_concurrent_streams {
            Some(0) => {
                return Err(SettingsError::Invalid {
                    name: "grpc_max_concurrent_streams",
                    reason: "must be at least 1".into(),
                })
            }
            Some(n) => n,
            None => d.grpc_max_concurrent_streams,
        };
        let metrics_require_token = self
            .metrics_require_token
            .unwrap_or(d.metrics_require_token);
        if metrics_require_token && self.auth_tokens.is_none() {
            return Err(SettingsError::Invalid {
                name: "metrics_require_token",
                reason: "needs auth_tokens (a tokens file with a `metrics` token)".into(),
            });
        }
        // With tokens, management needs a `management` token whatever this says: a
        // server started with both would look open to whoever reads its flags, and
        // not be.
        if self.allow_unauthenticated_management == Some(true) && self.auth_tokens.is_some() {
            return Err(SettingsError::Invalid {
                name: "allow_unauthenticated_management",
                reason: "cannot be on together with auth_tokens \
                         (--allow-unauthenticated-management with --auth-tokens): with a \
                         tokens file, management always needs a token with the \
                         `management` scope; leave one of the two out"
                    .into(),
            });
        }
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(SettingsError::Invalid {
                    name: "tls_cert",
                    reason: "tls_cert and tls_key must be given together".into(),
                })
            }
            (None, None, Some(_)) => {
                return Err(SettingsError::Invalid {
                    name: "tls_client_ca",
                    reason: "client certificates need TLS: give tls_cert and tls_key too".into(),
                })
            }
            // Workers serve plain HTTP: with TLS on, their ports stay on this machine.
            (Some(_), Some(_), _) if !self.worker_bind.unwrap_or(d.worker_bind).is_loopback() => {
                return Err(SettingsError::Invalid {
                    name: "worker_bind",
                    reason: "deployed models' workers serve plain HTTP (no TLS, no client \
                             certificates): with tls_cert, worker_bind must be a loopback \
                             address"
                        .into(),
                })
            }
            _ => {}
        }
        let http2_keep_alive_interval = match self.http2_keep_alive_interval_secs {
            None => d.http2_keep_alive_interval,
            Some(0.0) => None,
            Some(s) => Some(seconds(
                "http2_keep_alive_interval_secs",
                Some(s),
                Duration::ZERO,
            )?),
        };
        let max_header_bytes = match self.max_header_bytes {
            None => d.max_header_bytes,
            Some(n) if (crate::connections::MIN_HEADER_BYTES..=1 << 30).contains(&n) => n,
            Some(n) => {
                return Err(SettingsError::Invalid {
                    name: "max_header_bytes",
                    reason: format!(
                        "{n} is not between {} and 1073741824",
                        crate::connections::MIN_HEADER_BYTES
                    ),
                })
            }
        };
        let rest_max_concurrent_streams = match self.rest_max_concurrent_streams {
            Some(0) => {
                return Err(SettingsError::Invalid {
                    name: "rest_max_concurrent_streams",
                    reason: "must be at least 1".into(),
                })
            }
            Some(n) => n,
            None => d.rest_max_concurrent_streams,
        };
        let max_connections = match self.max_connections {
            Some(0) => {
                return Err(SettingsError::Invalid {
                    name: "max_connections",
                    reason: "must be at least 1".into(),
                })
            }
            other => other.or(d.max_connections),
        };
        let redis_url = match self.redis_url {
            None => d.redis_url,
            Some(url) => {
                crate::cache::check_redis_url(&url).map_err(|reason| SettingsError::Invalid {
                    name: "redis_url",
                    reason,
                })?;
                Some(url)
            }
        };
        let redis_timeout = match self.redis_timeout_ms {
            None => d.redis_timeout,
            Some(ms @ 1..=10_000) => Duration::from_millis(ms),
            Some(ms) => {
                return Err(SettingsError::Invalid {
                    name: "redis_timeout_ms",
                    reason: format!("{ms} is not a number of milliseconds between 1 and 10000"),
                })
            }
        };
        let job_retention = match self.job_retention_days {
            None => d.job_retention,
            Some(days) if days.is_finite() && days > 0.0 && days <= 36_500.0 => {
                Duration::from_secs_f64(days * 86_400.0)
            }
            Some(days) => {
                return Err(SettingsError::Invalid {
                    name: "job_retention_days",
                    reason: format!("{days} is not a number of days above 0 and at most 36500"),
                })
            }
        };
        let upload_job_grace = match self.upload_job_grace_secs {
            None => d.upload_job_grace,
            Some(secs @ 1..=604_800) => Duration::from_secs(secs),
            Some(secs) => {
                return Err(SettingsError::Invalid {
                    name: "upload_job_grace_secs",
                    reason: format!("{secs} is not a number of seconds between 1 and 604800"),
                })
            }
        };
        Ok(Settings {
            job_workers: threads("job_workers", self.job_workers, d.job_workers)?,
            job_retention,
            upload_job_grace,
            train_max_rows: positive("train_max_rows", self.train_max_rows, d.train_max_rows)?,
            max_categories: positive("max_categories", self.max_categories, d.max_categories)?,
            data_dir: self.data_dir,
            single_model: None,
            model_defaults: Default::default(),
            metrics_path: None,
            worker_ports: match self.worker_ports.as_deref() {
                None => Some((8000, 8999)),
                Some(text) => {
                    parse_worker_ports(text).map_err(|reason| SettingsError::Invalid {
                        name: "worker_ports",
                        reason,
                    })?
                }
            },
            worker_bind: self.worker_bind.unwrap_or(d.worker_bind),
            registry_addr: self.registry_addr,
            worker_binary: None,
            worker_cgroups: self.worker_cgroups.unwrap_or(d.worker_cgroups),
            worker_start_timeout: seconds(
                "worker_start_timeout_secs",
                self.worker_start_timeout_secs,
                d.worker_start_timeout,
            )?,
            supervisor_token_sha256: None,
            worker_tokens_in_force: None,
            management_server: None,
            worker_deployment: None,
            cache_max_bytes: self.cache_max_bytes.unwrap_or(d.cache_max_bytes),
            redis_url,
            redis_timeout,
            max_connections,
            header_read_timeout: seconds(
                "header_read_timeout_secs",
                self.header_read_timeout_secs,
                d.header_read_timeout,
            )?,
            keep_alive_timeout: seconds(
                "keep_alive_timeout_secs",
                self.keep_alive_timeout_secs,
                d.keep_alive_timeout,
            )?,
            body_read_timeout: seconds(
                "body_read_timeout_secs",
                self.body_read_timeout_secs,
                d.body_read_timeout,
            )?,
            send_timeout: seconds("send_timeout_secs", self.send_timeout_secs, d.send_timeout)?,
            max_header_bytes,
            rest_max_concurrent_streams,
            http2_keep_alive_interval,
            http2_keep_alive_timeout: seconds(
                "http2_keep_alive_timeout_secs",
                self.http2_keep_alive_timeout_secs,
                d.http2_keep_alive_timeout,
            )?,
            http2_max_pending_accept_reset_streams: self
                .http2_max_pending_accept_reset_streams
                .unwrap_or(d.http2_max_pending_accept_reset_streams),
            grpc_idle_timeout: seconds(
                "grpc_idle_timeout_secs",
                self.grpc_idle_timeout_secs,
                d.grpc_idle_timeout,
            )?,
            auth_tokens: self.auth_tokens.or(d.auth_tokens),
            allow_unauthenticated_management: self
                .allow_unauthenticated_management
                .unwrap_or(d.allow_unauthenticated_management),
            metrics_require_token,
            allowed_model_roots: self.allowed_model_roots.unwrap_or(d.allowed_model_roots),
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_client_ca: self.tls_client_ca,
            max_request_rows: positive(
                "max_request_rows",
                self.max_request_rows,
                d.max_request_rows,
            )?,
            max_response_bytes: positive(
                "max_response_bytes",
                self.max_response_bytes,
                d.max_response_bytes,
            )?,
            grpc_max_concurrent_streams,
            grpc_send_timeout,
            public_url,
            database_url: self.database_url,
            state_dir: self.state_dir,
            database_timeout: seconds(
                "database_timeout_secs",
                self.database_timeout_secs,
                d.database_timeout,
            )?,
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
            shutdown_delay: poll_wait(
                "shutdown_delay_secs",
                self.shutdown_delay_secs,
                d.shutdown_delay,
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
            grpc_max_receive_bytes,
            grpc_max_send_bytes: positive(
                "grpc_max_send_bytes",
                self.grpc_max_send_bytes,
                d.grpc_max_send_bytes,
            )?,
            request_timeout,
            max_request_bytes,
            max_inflight_body_bytes,
            inference_threads: threads(
                "inference_threads",
                self.inference_threads,
                d.inference_threads,
            )?,
            log_format: self.log_format.unwrap_or(d.log_format),
            onnxruntime_path: self.onnxruntime_path.or(d.onnxruntime_path),
            onnx_intra_threads,
            onnx_sessions,
            tensorflow_path: self.tensorflow_path.or(d.tensorflow_path),
        })
    }
}

#[cfg(test)]
mod tests;
