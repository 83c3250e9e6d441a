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
    /// Most request-body bytes held at once by all the requests being received
    /// (REST and gRPC; streamed multipart uploads excepted, which go to disk as
    /// they arrive), so many large bodies at once cannot exhaust memory though each
    /// is within its limit (`connections::BodyBudget`); a body that would pass it
    /// fails with 503 (gRPC: RESOURCE_EXHAUSTED). Default 1 GiB, or the largest body
    /// `max_request_bytes` and `grpc_max_receive_bytes` allow if more; never less.
    pub max_inflight_body_bytes: u64,
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
    /// Directory holding TensorFlow's C API libraries (`libtensorflow_cc.so.2`,
    /// `libtensorflow_framework.so.2`: the tensorflow-cpu wheel's `tensorflow/`),
    /// loaded only when a SavedModel is. Default: `FERROSERVE_TENSORFLOW_PATH`, then
    /// next to the executable.
    pub tensorflow_path: Option<PathBuf>,
    /// Time between two polls of the model repository for new, removed or changed
    /// versions and configs. Default 1 s; zero disables polling.
    pub file_system_poll_wait: Duration,
    /// A file listing models (ferroserve TOML, or TF Serving's `model_config_list`
    /// text format) served besides the repository's. Default none.
    pub model_config_file: Option<PathBuf>,
    /// Time between two reads of `model_config_file`. Default zero: read at start-up only.
    pub model_config_file_poll_wait: Duration,
    /// Largest model file `POST /upload_model` accepts, in bytes; larger is 413.
    /// Also bounds the files one multipart job request carries, all together.
    /// Default 1 GiB.
    pub max_upload_bytes: u64,
    /// TOML file of bearer tokens (name, SHA-256, scopes), re-read when it changes.
    /// Default none: inference is open and management is allowed only from loopback
    /// clients.
    pub auth_tokens: Option<PathBuf>,
    /// Without tokens, allow management from any client, not only loopback ones.
    /// Default false.
    pub allow_unauthenticated_management: bool,
    /// `/metrics` needs a token with the `metrics` scope (needs `auth_tokens`).
    /// Default false: `/metrics` is open.
    pub metrics_require_token: bool,
    /// Directories, besides the repository, that every model base path (model config
    /// file, gRPC `HandleReloadConfigRequest`) must lie under. Default empty, which
    /// means the model config file's directory ([`Settings::model_roots`]).
    pub allowed_model_roots: Vec<PathBuf>,
    /// PEM certificate chain served on both the REST and the gRPC port; with
    /// `tls_key` it turns TLS on. Re-read when the file changes. Default none: plain TCP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`. Default none.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: when given, clients must present a certificate signed by
    /// one of them (mutual TLS). Needs `tls_cert`. Default none.
    pub tls_client_ca: Option<PathBuf>,
    /// Most rows (dimension 0 of the inputs) one predict request may carry; more is
    /// 413 / RESOURCE_EXHAUSTED. A model's config.toml may set its own
    /// `max_request_rows`. Default 65536.
    pub max_request_rows: usize,
    /// Largest answer one predict request may produce, in bytes, estimated from the
    /// output tensors before anything is encoded; larger is 413 /
    /// RESOURCE_EXHAUSTED. Default 64 MiB.
    pub max_response_bytes: usize,
    /// Most concurrent HTTP/2 streams (calls) one gRPC connection may have open.
    /// Default 256.
    pub grpc_max_concurrent_streams: u32,
    /// How long a gRPC response may wait for its client to read it before the
    /// stream is reset and its memory freed. Default 30 s.
    pub grpc_send_timeout: Duration,
    /// Where clients reach the REST API (`http://models.example:8501`, or behind a
    /// proxy `https://gateway.example/ml`), for the URLs answers give (`/deploy`'s
    /// `service_url`, status `endpoints`); never taken from a request's `Host`.
    /// Default none: `server::run` derives it from the REST listener's address
    /// (see [`default_public_url`]).
    pub public_url: Option<String>,
    /// The metadata store (`sqlite://…`, `postgres://…`, `mysql://…` or
    /// `mariadb://…`). Default none: `sqlite://<state dir>/ferroserve.db`
    /// (see [`Settings::database_url`]).
    pub database_url: Option<String>,
    /// Where the server keeps its own files (the default SQLite database). Default
    /// none: `<model repository>/.ferroserve`, hidden from the repository scan.
    pub state_dir: Option<PathBuf>,
    /// Longest wait for the database: connecting at start, and each write a
    /// management call must make (past it the call answers 503). Default 5 s.
    pub database_timeout: Duration,
    /// Deadline of one management operation (upload check and move, reload, deploy,
    /// stop, delete), waiting for the model's lock included; past it the caller gets
    /// 503 (lock busy) or 504, and an operation not yet started never runs. Default 60 s.
    pub management_timeout: Duration,
    /// How long shutdown waits for in-flight requests before closing their
    /// connections. Default 30 s.
    pub shutdown_timeout: Duration,
    /// After the stop signal, how long the server keeps accepting and answering
    /// while readiness already answers 503, so that load balancers stop sending
    /// before the listeners close. Default zero.
    pub shutdown_delay: Duration,
    /// Most model versions loading at once, across all models. Default: CPU cores.
    pub max_concurrent_loads: usize,
    /// Most versions one model serves, whatever its policy asks; beyond it the highest
    /// ones are served and status says so. Default 100.
    pub max_served_versions_per_model: usize,
    /// Most connections open at once across the REST and gRPC listeners; at it idle
    /// connections are closed to make room (`connections::limit`), and with none idle
    /// new connections wait in the listen backlog until one closes. Default none: the
    /// open-files limit (raised to its hard limit at start) less a reserve of a tenth,
    /// at least 256 (`connections::default_max_connections`).
    pub max_connections: Option<usize>,
    /// Longest a client may take to send a request head (HTTP/1: from its first
    /// byte, or from the accept for a connection's first request) before the
    /// connection is closed. Default 10 s.
    pub header_read_timeout: Duration,
    /// Longest a REST connection may stay open without a request in progress
    /// (HTTP/1 keep-alive, HTTP/2 without streams). Default 60 s.
    pub keep_alive_timeout: Duration,
    /// Longest a request body (REST) or request message (gRPC) may stop arriving
    /// before the request fails (REST: 408, gRPC: DEADLINE_EXCEEDED); also the grace
    /// before a body must average `connections::MIN_BODY_BYTES_PER_SEC`. Default 30 s.
    pub body_read_timeout: Duration,
    /// Longest a REST answer may wait for its client to take more of it before the
    /// connection (HTTP/1) or stream (HTTP/2) is closed. Default 30 s.
    pub send_timeout: Duration,
    /// Largest request head: HTTP/1 start line and headers (more is 431), HTTP/2
    /// header list. Default 64 KiB; at least 8 KiB.
    pub max_header_bytes: usize,
    /// Most concurrent HTTP/2 streams (requests) one REST connection may have open.
    /// Default 256.
    pub rest_max_concurrent_streams: u32,
    /// Interval of HTTP/2 keep-alive pings on both listeners; `None` sends none.
    /// Default 60 s.
    pub http2_keep_alive_interval: Option<Duration>,
    /// How long an HTTP/2 ping may go unanswered before the connection is closed.
    /// Default 20 s.
    pub http2_keep_alive_timeout: Duration,
    /// Most streams a client may open and reset before the server accepted them,
    /// per connection (the "rapid reset" attack); more closes the connection.
    /// Default 20.
    pub http2_max_pending_accept_reset_streams: usize,
    /// Longest a gRPC connection may stay open with no call in progress. Default 300 s.
    pub grpc_idle_timeout: Duration,
    /// Size of the in-process response cache tier, in bytes (answers of models whose
    /// config.toml has `[cache] enabled = true`); 0 turns the tier off. Default 256 MiB.
    pub cache_max_bytes: u64,
    /// Redis server shared by several replicas as the response cache's second tier
    /// (`redis://[user:password@]host:port[/db]`). Default none: no Redis tier.
    pub redis_url: Option<String>,
    /// Longest a request waits for a Redis lookup; a slower one counts as a miss (and
    /// an error). Default 5 ms.
    pub redis_timeout: Duration,
    /// Jobs (training, batch scoring) running at once; the others wait queued.
    /// Default 1.
    pub job_workers: usize,
    /// How long finished jobs are kept before they are deleted. Default 30 days.
    pub job_retention: Duration,
    /// How long a queued job with uploaded files waits for the server that holds
    /// them (its heartbeat seen standing still by another replica) before that
    /// replica fails it. Default 10 minutes.
    pub upload_job_grace: Duration,
    /// Most rows a training job reads; a larger source fails the job naming the
    /// limit (training loads its data whole). Default 1,000,000.
    pub train_max_rows: usize,
    /// Most distinct values a categorical feature may have when a training job
    /// learns its categories from the data. Default 1000.
    pub max_categories: usize,
    /// The directory jobs read and write files in: a job's `path` must lie under it.
    /// Default none: `<state dir>/data` (see [`Settings::data_dir`]).
    pub data_dir: Option<PathBuf>,
    /// One model served from its own directory instead of the repository root
    /// (TF Serving's `--model_name` and `--model_base_path`). Default none.
    pub single_model: Option<SingleModel>,
    /// What a model's `config.toml` leaves out takes these (TF Serving's
    /// `--enable_batching`, `--batching_parameters_file`,
    /// `--allow_version_labels_for_unavailable_models`, `--enable_model_warmup`).
    pub model_defaults: crate::model_config::ModelDefaults,
    /// A second path the Prometheus metrics are served at, besides `/metrics`
    /// (TF Serving's `--monitoring_config_file`). Default none.
    pub metrics_path: Option<String>,
    /// Ports deployed models' workers listen on (`--worker-ports`, first and last).
    /// `None`: deployments are served in-process. Default for the `serve` command
    /// 8000-8999; `Settings::default()` (a server embedded as a library) has none,
    /// since only the ferroserve binary can run `ferroserve worker`.
    pub worker_ports: Option<(u16, u16)>,
    /// The address workers bind (`--worker-bind`). Default 127.0.0.1.
    pub worker_bind: std::net::IpAddr,
    /// The registry's own listener (`--registry-addr`), besides the REST port.
    /// Default none.
    pub registry_addr: Option<SocketAddr>,
    /// The binary started as `<binary> worker`. Default none: the running
    /// executable (`main` sets it).
    pub worker_binary: Option<PathBuf>,
    /// Whether workers' limits may use cgroup v1 groups (`--worker-cgroups`); off
    /// leaves memory to RLIMIT_AS + the RSS watchdog and cpu to affinity. Default on.
    pub worker_cgroups: bool,
    /// How long a deployed model's worker may take to serve its model
    /// (`--worker-start-timeout`). Default 120 s.
    pub worker_start_timeout: Duration,
    /// In a worker (`ferroserve worker`): the SHA-256 of its supervisor's token,
    /// accepted with every scope besides `auth_tokens` (`crate::auth`). Never a
    /// flag or a file: the worker reads it from its environment. Default none.
    pub supervisor_token_sha256: Option<[u8; 32]>,
    /// In a worker (`ferroserve worker`): the tokens in force in its main server
    /// (their hashes and scopes), which it serves with while its tokens file
    /// (`auth_tokens`) does not parse (`crate::auth::Auth::with_worker_token_file`).
    /// Never a flag or a file: the worker reads it from its environment. Default none.
    pub worker_tokens_in_force: Option<Vec<crate::auth::TokenEntry>>,
    /// In a worker (`ferroserve worker`): where management goes, the URL of the main
    /// server that deployed its model. Every management route and call (REST and
    /// gRPC) on a worker's ports is refused, whatever the token, naming it: the main
    /// server's registry and store are what a deployment is, and a change made on
    /// a worker behind its back (a deploy, a stop, a reload) would leave the two
    /// disagreeing. `Some("")` when the main server's URL is not known. Default none.
    pub management_server: Option<String>,
    /// In a worker (`ferroserve worker --deployment`): its model's deployment as the
    /// supervisor applied it to this process (limits as given, how each is
    /// enforced), which the worker's status and console report. Default none.
    pub worker_deployment: Option<crate::workers::AppliedDeployment>,
}

/// A model named on the command line with the directory of its versions.
#[derive(Debug, Clone, PartialEq)]
pub struct SingleModel {
    pub name: String,
    pub base_path: PathBuf,
}

impl Settings {
    /// The TLS files when TLS is on (`into_settings` checked that cert and key
    /// come together).
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        }
    }

    /// The server's own directory: `state_dir`, or `<model repository>/.ferroserve`
    /// (hidden, so the repository scan never takes it for a model).
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| self.model_repository.join(".ferroserve"))
    }

    /// Where jobs read and write files: `data_dir`, or `<state dir>/data`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| self.state_dir().join("data"))
    }

    /// The metadata store's URL: `database_url`, or SQLite in the state directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}",
                self.state_dir().join("ferroserve.db").display()
            ),
        }
    }

    /// The directories model base paths must lie under: the repository (always:
    /// it is served anyway), plus `allowed_model_roots`, or by default the model
    /// config file's directory.
    pub fn model_roots(&self) -> Vec<PathBuf> {
        let mut roots = vec![self.model_repository.clone()];
        if let Some(single) = &self.single_model {
            roots.push(single.base_path.clone());
        }
        if !self.allowed_model_roots.is_empty() {
            roots.extend(self.allowed_model_roots.iter().cloned());
        } else if let Some(file) = &self.model_config_file {
            roots.push(match file.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            });
        }
        roots
    }
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
            max_inflight_body_bytes: 1024 * 1024 * 1024,
            inference_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            log_format: LogFormat::Human,
            onnxruntime_path: None,
            onnx_intra_threads: 1,
            onnx_sessions: 1,
            tensorflow_path: None,
            file_system_poll_wait: Duration::from_secs(1),
            model_config_file: None,
            model_config_file_poll_wait: Duration::ZERO,
            max_upload_bytes: 1024 * 1024 * 1024,
            auth_tokens: None,
            allow_unauthenticated_management: false,
            metrics_require_token: false,
            allowed_model_roots: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            max_request_rows: 65_536,
            max_response_bytes: 64 * 1024 * 1024,
            grpc_max_concurrent_streams: 256,
            grpc_send_timeout: Duration::from_secs(30),
            public_url: None,
            database_url: None,
            state_dir: None,
            database_timeout: Duration::from_secs(5),
            management_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            max_concurrent_loads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            max_served_versions_per_model: 100,
            max_connections: None,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            rest_max_concurrent_streams: 256,
            http2_keep_alive_interval: Some(Duration::from_secs(60)),
            http2_keep_alive_timeout: Duration::from_secs(20),
            http2_max_pending_accept_reset_streams: 20,
            grpc_idle_timeout: Duration::from_secs(300),
            cache_max_bytes: 256 * 1024 * 1024,
            redis_url: None,
            redis_timeout: Duration::from_millis(5),
            job_workers: 1,
            job_retention: Duration::from_secs(30 * 86_400),
            upload_job_grace: Duration::from_secs(600),
            train_max_rows: 1_000_000,
            max_categories: 1000,
            data_dir: None,
            single_model: None,
            model_defaults: Default::default(),
            metrics_path: None,
            worker_ports: None,
            worker_bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            registry_addr: None,
            worker_binary: None,
            worker_cgroups: true,
            worker_start_timeout: Duration::from_secs(120),
            supervisor_token_sha256: None,
            worker_tokens_in_force: None,
            management_server: None,
            worker_deployment: None,
        }
    }
}

/// The longest request deadline the server or a model's `config.toml` may give: a
/// year.
pub const MAX_REQUEST_TIMEOUT_SECS: f64 = 365.0 * 86_400.0;

/// The most threads one thread-count setting may ask for (`inference_threads`,
/// `onnx_intra_threads`, `onnx_sessions`, `job_workers`, and TF Serving's
/// `--tensorflow_intra_op_parallelism`), and the most ONNX Runtime threads one
/// model version may start (`onnx_sessions` × `onnx_intra_threads`): a count far
/// above any machine's cores (a typo, `100000`) would start that many threads per
/// model and exhaust the machine instead of serving.
pub const MAX_THREADS: usize = 1024;

/// A deadline of `secs` seconds, when it is a number above 0 and at most
/// `max_secs` (never a panic: `Duration::from_secs_f64` has one for values it
/// cannot hold).
pub fn deadline(secs: f64, max_secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0 && secs <= max_secs)
        .then(|| Duration::try_from_secs_f64(secs).ok())
        .flatten()
}

/// The public URL of a server whose REST listener is bound to `addr`: `https://`
/// when it serves TLS (`--tls-cert`), else `http://`, and the address, with an
/// unspecified IP (`0.0.0.0`, `::`) as loopback, since that is the one address of
/// the machine known to reach it.
pub fn default_public_url(addr: SocketAddr, tls: bool) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

/// `--worker-ports`: `FIRST-LAST` (or one port), or `off`.
pub fn parse_worker_ports(text: &str) -> Result<Option<(u16, u16)>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let (first, last) = t.split_once('-').unwrap_or((t, t));
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{text:?} is not a port range FIRST-LAST (1-65535) or off"))
    };
    let (first, last) = (port(first)?, port(last)?);
    if first > last {
        return Err(format!("{text:?}: the first port is above the last"));
    }
    Ok(Some((first, last)))
}

mod args;
mod env;

pub use args::{ServeArgs, SettingsError};
