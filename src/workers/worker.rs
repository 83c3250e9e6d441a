//! `ferroserve worker`: one deployed model's server. The same `server::run` as
//! `serve`, restricted to one model (TF Serving's single-model mode: the model's own
//! directory, watched for new versions), on the port the supervisor chose, with its
//! own state directory and SQLite store, its threads sized to its CPU limit, and its
//! request deadline from the deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::model_config::ModelDefaults;
use crate::server::Listeners;
use crate::settings::{LogFormat, ServeArgs, Settings, SingleModel};
use crate::sources::Deployment;
use crate::store::{ModelSettings, Store};
use crate::workers::AppliedDeployment;

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The model's name
    #[arg(long)]
    pub model: String,
    /// The model's directory (its versions)
    #[arg(long, value_name = "DIR")]
    pub model_dir: PathBuf,
    /// Where the REST API listens
    #[arg(long, value_name = "HOST:PORT")]
    pub rest_addr: SocketAddr,
    /// Where gRPC listens (off when not given)
    #[arg(long, value_name = "HOST:PORT")]
    pub grpc_addr: Option<SocketAddr>,
    /// The worker's own state directory (its store)
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The supervisor's pid: the worker exits at once if its parent is another
    #[arg(long)]
    pub parent_pid: Option<u32>,
    /// Inference and async threads (ceil of the CPU limit) [default: every core]
    #[arg(long)]
    pub threads: Option<usize>,
    /// The request deadline in seconds
    #[arg(long)]
    pub timeout_secs: Option<f64>,
    /// How long stopping drains in-flight requests, in seconds (the supervisor's
    /// `process::drain_of`: the deployment's timeout, at least the main server's
    /// `--shutdown-timeout`) [default: 8]
    #[arg(long, value_name = "SECONDS")]
    pub drain_secs: Option<f64>,
    /// Exit (code 88, reported as OOM) when the resident memory passes this
    #[arg(long, value_name = "BYTES")]
    pub rss_limit_bytes: Option<u64>,
    #[arg(long, value_name = "FILE")]
    pub onnxruntime_path: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub tensorflow_path: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub auth_tokens: Option<PathBuf>,
    /// `/metrics` (and `--metrics-path`) need a token with the `metrics` scope
    #[arg(long)]
    pub metrics_require_token: bool,
    /// The metrics' second path, besides `/metrics` (the main server's
    /// `--monitoring_config_file`)
    #[arg(long, value_name = "PATH", value_parser = crate::http::metrics_path_arg)]
    pub metrics_path: Option<String>,
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// The main server's URL: every management request on this worker's ports is
    /// refused, naming it (`Settings::management_server`)
    #[arg(long, value_name = "URL")]
    pub main_server: Option<String>,
    /// The model's deployment as the supervisor applied it to this process
    /// (`workers::AppliedDeployment`, as JSON), which this worker's status and
    /// console report (`Settings::worker_deployment`)
    #[arg(long, value_name = "JSON", value_parser = parse_applied_deployment)]
    pub deployment: Option<AppliedDeployment>,
    /// The main server's bounds on one request, enforced here as there, and its
    /// model defaults.
    #[command(flatten)]
    pub inherited: Inherited,
    /// The SHA-256 of the supervisor's token ([`SUPERVISOR_TOKEN_ENV`]), taken from
    /// the environment by [`WorkerArgs::take_supervisor_token`]; never a flag, so it
    /// is not on the command line for other users to read.
    #[arg(skip)]
    pub supervisor_token_sha256: Option<[u8; 32]>,
    /// The tokens in force in the main server ([`TOKENS_IN_FORCE_ENV`]), which this
    /// worker serves with while its tokens file does not parse; taken from the
    /// environment by [`WorkerArgs::take_supervisor_token`], as its token is.
    #[arg(skip)]
    pub tokens_in_force: Option<Vec<crate::auth::TokenEntry>>,
}

/// What a worker takes from its main server's settings: the bounds on one request,
/// which it enforces on its port as the main server does on its own (so that a
/// deployed model answers a request past one — 413, 408, RESOURCE_EXHAUSTED — as an
/// in-process one does), the defaults for what the model's `config.toml` leaves
/// out (TF Serving's `--enable_batching`, `--batching_parameters_file`, ...), and
/// the response cache's tiers (so that `[cache]` means for a deployed model what it
/// means in process: the same in-process tier, off where it is off, and the shared
/// Redis tier).
/// The flags are the `serve` command's (the defaults' one is the worker's own);
/// [`Inherited::of`] reads every one from the main server's settings and
/// [`Inherited::args`] writes them from clap's own names. The Redis URL, which may
/// hold a password, is no flag: it travels in the worker's environment
/// ([`Inherited::environment`]), as the supervisor's token does.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, serde::Serialize)]
pub struct Inherited {
    #[arg(long, value_name = "ROWS")]
    pub max_request_rows: Option<usize>,
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    #[arg(long, value_name = "BYTES")]
    pub max_inflight_body_bytes: Option<u64>,
    #[arg(long, value_name = "BYTES")]
    pub max_response_bytes: Option<usize>,
    #[arg(long, value_name = "BYTES")]
    pub grpc_max_receive_bytes: Option<usize>,
    #[arg(long, value_name = "BYTES")]
    pub grpc_max_send_bytes: Option<usize>,
    /// The deadline when neither the deployment nor the model's config gives one
    #[arg(long, value_name = "SECONDS")]
    pub request_timeout_secs: Option<f64>,
    #[arg(long, value_name = "SECONDS")]
    pub body_read_timeout_secs: Option<f64>,
    #[arg(long, value_name = "SECONDS")]
    pub header_read_timeout_secs: Option<f64>,
    #[arg(long, value_name = "SECONDS")]
    pub send_timeout_secs: Option<f64>,
    #[arg(long, value_name = "SECONDS")]
    pub grpc_send_timeout_secs: Option<f64>,
    #[arg(long, value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Not a request's bound, but the main server's too: the most versions of the
    /// model served at once, and how often its directory is scanned.
    #[arg(long, value_name = "N")]
    pub max_served_versions_per_model: Option<usize>,
    #[arg(long, value_name = "SECONDS")]
    pub file_system_poll_wait_seconds: Option<f64>,
    /// The main server's defaults for what the model's `config.toml` leaves out
    /// (batching, labels of unavailable versions, warm-up), as JSON
    #[arg(long, value_name = "JSON", value_parser = parse_model_defaults)]
    pub model_defaults: Option<ModelDefaults>,
    /// The in-process response cache tier's size (0: off); a worker keeps at most
    /// a quarter of its memory limit ([`WorkerArgs::settings`]).
    #[arg(long, value_name = "BYTES")]
    pub cache_max_bytes: Option<u64>,
    /// How long a request waits for a Redis cache lookup.
    #[arg(long, value_name = "MILLISECONDS")]
    pub redis_timeout_ms: Option<u64>,
    /// The Redis tier's URL: in the environment ([`REDIS_URL_ENV`]), never on the
    /// command line, which every user of the machine may read.
    #[arg(skip)]
    #[serde(skip)]
    pub redis_url: Option<RedisUrl>,
}

/// A Redis URL, which may hold a password: its `Debug` shows it without one.
#[derive(Clone, PartialEq)]
pub struct RedisUrl(pub String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", crate::store::pool::redact(&self.0))
    }
}

fn parse_applied_deployment(text: &str) -> Result<AppliedDeployment, String> {
    serde_json::from_str(text).map_err(|e| format!("not the applied deployment's JSON: {e}"))
}

fn parse_model_defaults(text: &str) -> Result<ModelDefaults, String> {
    serde_json::from_str(text).map_err(|e| format!("not the model defaults' JSON: {e}"))
}

impl Inherited {
    /// What a worker takes from the main server's `settings`.
    pub fn of(settings: &Settings) -> Inherited {
        Inherited {
            max_request_rows: Some(settings.max_request_rows),
            max_request_bytes: Some(settings.max_request_bytes),
            max_inflight_body_bytes: Some(settings.max_inflight_body_bytes),
            max_response_bytes: Some(settings.max_response_bytes),
            grpc_max_receive_bytes: Some(settings.grpc_max_receive_bytes),
            grpc_max_send_bytes: Some(settings.grpc_max_send_bytes),
            request_timeout_secs: Some(settings.request_timeout.as_secs_f64()),
            body_read_timeout_secs: Some(settings.body_read_timeout.as_secs_f64()),
            header_read_timeout_secs: Some(settings.header_read_timeout.as_secs_f64()),
            send_timeout_secs: Some(settings.send_timeout.as_secs_f64()),
            grpc_send_timeout_secs: Some(settings.grpc_send_timeout.as_secs_f64()),
            max_header_bytes: Some(settings.max_header_bytes),
            max_served_versions_per_model: Some(settings.max_served_versions_per_model),
            file_system_poll_wait_seconds: Some(settings.file_system_poll_wait.as_secs_f64()),
            model_defaults: Some(settings.model_defaults.clone()),
            cache_max_bytes: Some(settings.cache_max_bytes),
            redis_timeout_ms: Some(
                u64::try_from(settings.redis_timeout.as_millis()).unwrap_or(u64::MAX),
            ),
            redis_url: settings.redis_url.clone().map(RedisUrl),
        }
    }

    /// The worker's environment for these settings: what may be secret, which
    /// [`WorkerArgs::take_supervisor_token`] takes out of it at the worker's start.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        self.redis_url
            .iter()
            .map(|url| (REDIS_URL_ENV, url.0.clone()))
            .collect()
    }

    /// The worker's command-line flags for these settings: `--<clap's long name>=<value>`
    /// for every field given, a number as written, the model defaults as JSON.
    pub fn args(&self) -> Vec<String> {
        use clap::Args as _;
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(self) else {
            unreachable!("a struct of numbers serializes to a JSON object")
        };
        let command = Inherited::augment_args(clap::Command::new("worker"));
        let mut args = Vec::new();
        for arg in command.get_arguments() {
            let (Some(long), Some(value)) = (arg.get_long(), fields.get(arg.get_id().as_str()))
            else {
                continue;
            };
            match value {
                serde_json::Value::Null => {}
                serde_json::Value::String(text) => args.push(format!("--{long}={text}")),
                other => args.push(format!("--{long}={other}")),
            }
        }
        args
    }
}

/// The environment variable a worker's supervisor passes its token in: the worker
/// accepts it with every scope besides its tokens file, so the main server can read
/// its status and health when tokens are configured. The worker removes it from
/// its environment at start, so nothing it starts inherits it.
pub const SUPERVISOR_TOKEN_ENV: &str = "FERROSERVE_SUPERVISOR_TOKEN";

/// The environment variable a worker's supervisor passes the tokens in force in the
/// main server in (`crate::auth::encode_entries`: hashes and scopes, never a
/// token): the worker serves with them while its tokens file (`--auth-tokens`)
/// does not parse, so a bad edit the main server keeps its tokens through neither
/// stops a worker that (re)starts nor opens it. Removed at start as the token is.
pub const TOKENS_IN_FORCE_ENV: &str = "FERROSERVE_WORKER_TOKENS_IN_FORCE";

/// The environment variable a worker's supervisor passes the main server's
/// `--redis-url` in (it may hold a password); removed at start as the token is.
pub const REDIS_URL_ENV: &str = "FERROSERVE_WORKER_REDIS_URL";

/// The share of its memory limit a worker's in-process cache tier may fill at most
/// (1 in 4): the tier lives inside the limit, beside the model, and a deployment
/// whose limit is smaller than `--cache-max-bytes` (256 MiB by default) would
/// otherwise be killed as its cache fills.
const CACHE_SHARE_OF_MEMORY_LIMIT: u64 = 4;

/// A worker's SQLite store, in its state directory: what it records (sampled
/// predictions, its events) until the main server moves it into its own store.
pub const STORE_FILE: &str = "worker.db";

impl WorkerArgs {
    /// Takes what the supervisor passes in the environment out of it, so nothing
    /// the worker starts inherits it: its token (keeping only its hash), the tokens
    /// in force in the main server ([`TOKENS_IN_FORCE_ENV`]) and the main server's
    /// Redis URL ([`REDIS_URL_ENV`]). Called before any other thread starts (and
    /// before logging does: what is wrong goes to stderr, the main server's log):
    /// changing the environment is not thread-safe.
    pub fn take_supervisor_token(&mut self) {
        if let Some(token) = std::env::var_os(SUPERVISOR_TOKEN_ENV) {
            std::env::remove_var(SUPERVISOR_TOKEN_ENV);
            let token = token.to_string_lossy();
            if !token.is_empty() {
                self.supervisor_token_sha256 = Some(crate::auth::token_sha256(&token));
            }
        }
        if let Some(text) = std::env::var_os(TOKENS_IN_FORCE_ENV) {
            std::env::remove_var(TOKENS_IN_FORCE_ENV);
            match crate::auth::decode_entries(&text.to_string_lossy()) {
                Ok(entries) => self.tokens_in_force = Some(entries),
                Err(e) => eprintln!(
                    "worker: the tokens in force its main server handed over are not valid \
                     ({e}); it serves only with its tokens file"
                ),
            }
        }
        if let Some(url) = std::env::var_os(REDIS_URL_ENV) {
            std::env::remove_var(REDIS_URL_ENV);
            let url = url.to_string_lossy();
            if !url.is_empty() {
                self.inherited.redis_url = Some(RedisUrl(url.into_owned()));
            }
        }
    }

    /// The server settings of this worker.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let repository = self.state_dir.join("repository");
        let mut settings = ServeArgs {
            model_repository: Some(repository),
            rest_addr: Some(self.rest_addr),
            state_dir: Some(self.state_dir.clone()),
            database_url: Some(format!(
                "sqlite://{}",
                self.state_dir.join(STORE_FILE).display()
            )),
            inference_threads: self.threads,
            max_concurrent_loads: Some(1),
            onnxruntime_path: self.onnxruntime_path.clone(),
            tensorflow_path: self.tensorflow_path.clone(),
            auth_tokens: self.auth_tokens.clone(),
            metrics_require_token: Some(self.metrics_require_token),
            log_format: self.log_format,
            max_request_rows: self.inherited.max_request_rows,
            max_request_bytes: self.inherited.max_request_bytes,
            max_inflight_body_bytes: self.inherited.max_inflight_body_bytes,
            max_response_bytes: self.inherited.max_response_bytes,
            grpc_max_receive_bytes: self.inherited.grpc_max_receive_bytes,
            grpc_max_send_bytes: self.inherited.grpc_max_send_bytes,
            request_timeout_secs: self.inherited.request_timeout_secs,
            body_read_timeout_secs: self.inherited.body_read_timeout_secs,
            header_read_timeout_secs: self.inherited.header_read_timeout_secs,
            send_timeout_secs: self.inherited.send_timeout_secs,
            grpc_send_timeout_secs: self.inherited.grpc_send_timeout_secs,
            max_header_bytes: self.inherited.max_header_bytes,
            max_served_versions_per_model: self.inherited.max_served_versions_per_model,
            file_system_poll_wait_seconds: self.inherited.file_system_poll_wait_seconds,
            cache_max_bytes: self.inherited.cache_max_bytes,
            redis_url: self.inherited.redis_url.as_ref().map(|url| url.0.clone()),
            redis_timeout_ms: self.inherited.redis_timeout_ms,
            // Stopping drains for at most this long; the supervisor kills later.
            shutdown_timeout_secs: Some(self.drain_secs.unwrap_or(DEFAULT_DRAIN_SECS)),
            ..ServeArgs::default()
        }
        .into_settings()?;
        settings.single_model = Some(SingleModel {
            name: self.model.clone(),
            base_path: self.model_dir.clone(),
        });
        settings.metrics_path = self.metrics_path.clone();
        settings.model_defaults = self.inherited.model_defaults.clone().unwrap_or_default();
        settings.worker_ports = None;
        settings.registry_addr = None;
        settings.supervisor_token_sha256 = self.supervisor_token_sha256;
        settings.worker_tokens_in_force = self.tokens_in_force.clone();
        settings.management_server = Some(self.main_server.clone().unwrap_or_default());
        settings.worker_deployment = self.deployment.clone();
        // The in-process cache tier is memory of this process, inside its limit.
        let memory_limit = self
            .deployment
            .as_ref()
            .and_then(|d| d.memory_limit.as_deref())
            .and_then(|limit| super::resources::parse_memory(limit).ok());
        if let Some(limit) = memory_limit {
            settings.cache_max_bytes = settings
                .cache_max_bytes
                .min(limit / CACHE_SHARE_OF_MEMORY_LIMIT);
        }
        Ok(settings)
    }

    /// Runs the worker until `shutdown`.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        if let Some(parent) = self.parent_pid {
            // SAFETY: getppid has no preconditions.
            if unsafe { libc::getppid() } as u32 != parent {
                anyhow::bail!("the supervisor (pid {parent}) is gone");
            }
        }
        let settings = self.settings()?;
        std::fs::create_dir_all(&settings.model_repository)
            .with_context(|| format!("cannot create {}", settings.model_repository.display()))?;
        // The deployment's timeout reaches the model the way a deployment's does in
        // the main server: through the store `server::run` restores from. The rest
        // of the deployment (environment, CPU and memory limits, applied by the
        // supervisor) is recorded beside it, as the model's deployment here.
        let store = Store::open(&settings.database_url(), settings.database_timeout, true)
            .await
            .map_err(|e| anyhow::anyhow!("worker store: {e}"))?;
        let given = self
            .deployment
            .as_ref()
            .map(AppliedDeployment::deployment)
            .unwrap_or_default();
        let row = ModelSettings {
            model: self.model.clone(),
            stopped: false,
            deployment: Some(Deployment {
                timeout_secs: self.timeout_secs,
                ..given
            }),
        };
        store
            .save_model_settings(&row, &row)
            .await
            .map_err(|e| anyhow::anyhow!("worker store: {e}"))?;
        store.close().await;
        if let Some(limit) = self.rss_limit_bytes {
            start_rss_watchdog(limit)?;
        }
        let rest = crate::server::listen(self.rest_addr)
            .with_context(|| format!("cannot listen on {}", self.rest_addr))?;
        let grpc = match self.grpc_addr {
            Some(addr) => Some(
                crate::server::listen(addr).with_context(|| format!("cannot listen on {addr}"))?,
            ),
            None => None,
        };
        // A stop signal says so in the state directory before the drain starts:
        // the listeners close at once, and the supervisor, whose health checks then
        // fail, must tell a worker stopped from outside (an operator's kill, a
        // container runtime) that drains from one that hangs. Left over from an
        // earlier run in this directory, it is removed first.
        let draining = self.state_dir.join(DRAINING_FILE);
        let _ = std::fs::remove_file(&draining);
        let shutdown = async move {
            shutdown.await;
            if let Err(e) = std::fs::write(&draining, b"") {
                tracing::warn!("cannot tell the supervisor this worker drains: {e}");
            }
        };
        crate::server::run(settings, Listeners { rest, grpc }, shutdown).await
    }
}

/// How long a worker drains when its supervisor gives no `--drain-secs`.
const DEFAULT_DRAIN_SECS: f64 = 8.0;

/// The file a worker creates in its state directory when it gets a stop signal,
/// before it drains (see [`WorkerArgs::run`]): its supervisor then leaves it to
/// finish its drain instead of killing it for failing health checks.
pub const DRAINING_FILE: &str = "draining";

/// How often the watchdog reads the resident memory.
const RSS_POLL: Duration = Duration::from_millis(20);

/// Exits the process (code [`super::WATCHDOG_EXIT_CODE`]) once its resident memory
/// passes `limit`: the memory limit where no cgroup can enforce it.
fn start_rss_watchdog(limit: u64) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("ferroserve-rss-watchdog".into())
        .spawn(move || loop {
            if let Some(u) = super::limits::process_usage(std::process::id()) {
                if u.rss_bytes > limit {
                    eprintln!(
                        "worker: resident memory {} bytes is past the memory limit of {limit} \
                         bytes; exiting",
                        u.rss_bytes
                    );
                    // SAFETY: _exit ends the process at once, with no unwinding.
                    unsafe { libc::_exit(super::WATCHDOG_EXIT_CODE) };
                }
            }
            std::thread::sleep(RSS_POLL);
        })
        .context("cannot start the RSS watchdog")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    /// Every bound the main server puts on one request reaches a worker's settings
    /// through its command line (none did: a deployed model took 20 rows past
    /// `--max-request-rows 10`), so do its model defaults (a deployed model ran
    /// unbatched under `--enable_batching`), and a worker knows it takes no
    /// management.
    #[test]
    fn a_worker_takes_every_request_bound_of_its_main_server() {
        let main = ServeArgs {
            max_request_rows: Some(10),
            max_request_bytes: Some(4000),
            max_inflight_body_bytes: Some(9000),
            max_response_bytes: Some(600),
            grpc_max_receive_bytes: Some(5000),
            grpc_max_send_bytes: Some(6000),
            request_timeout_secs: Some(2.5),
            body_read_timeout_secs: Some(3.0),
            header_read_timeout_secs: Some(4.0),
            send_timeout_secs: Some(5.0),
            grpc_send_timeout_secs: Some(6.0),
            max_header_bytes: Some(9000),
            max_served_versions_per_model: Some(1),
            file_system_poll_wait_seconds: Some(7.5),
            ..ServeArgs::default()
        }
        .into_settings()
        .unwrap();
        let mut main = main;
        // What `tensorflow_model_server --enable_batching --batching_parameters_file
        // --allow_version_labels_for_unavailable_models --enable_model_warmup=false
        // --saved_model_tags=serve,gpu --tensorflow_intra_op_parallelism=3
        // --tensorflow_inter_op_parallelism=2` gives.
        main.model_defaults = ModelDefaults {
            batching: Some(crate::model_config::BatchingConfig {
                enabled: true,
                max_batch_size: 7,
                max_queue_delay_micros: 1500,
                preferred_batch_sizes: vec![4, 7],
                max_queue_length: 33,
                instances: 2,
                inline_max_micros: 0,
            }),
            allow_unavailable_labels: true,
            warmup: Some(false),
            tensorflow: crate::model_config::TensorflowDefaults {
                tags: Some(vec!["serve".into(), "gpu".into()]),
                intra_op_threads: Some(3),
                inter_op_threads: Some(2),
            },
        };
        let mut argv: Vec<String> = [
            "worker",
            "--model",
            "m",
            "--model-dir",
            "/models/m",
            "--rest-addr",
            "127.0.0.1:1",
            "--state-dir",
            "/state/m-1",
            "--main-server",
            "http://main.example:8501",
        ]
        .map(String::from)
        .to_vec();
        argv.extend(Inherited::of(&main).args());
        let worker = Cli::try_parse_from(argv).unwrap().worker;
        let s = worker.settings().unwrap();
        assert_eq!(s.max_request_rows, main.max_request_rows);
        assert_eq!(s.max_request_bytes, main.max_request_bytes);
        assert_eq!(s.max_inflight_body_bytes, main.max_inflight_body_bytes);
        assert_eq!(s.max_response_bytes, main.max_response_bytes);
        assert_eq!(s.grpc_max_receive_bytes, main.grpc_max_receive_bytes);
        assert_eq!(s.grpc_max_send_bytes, main.grpc_max_send_bytes);
        assert_eq!(
            s.max_served_versions_per_model,
            main.max_served_versions_per_model
        );
        assert_eq!(s.file_system_poll_wait, main.file_system_poll_wait);
        assert_eq!(s.request_timeout, main.request_timeout);
        assert_eq!(s.body_read_timeout, main.body_read_timeout);
        assert_eq!(s.header_read_timeout, main.header_read_timeout);
        assert_eq!(s.send_timeout, main.send_timeout);
        assert_eq!(s.grpc_send_timeout, main.grpc_send_timeout);
        assert_eq!(s.max_header_bytes, main.max_header_bytes);
        assert_eq!(s.model_defaults, main.model_defaults);
        assert_eq!(
            s.management_server.as_deref(),
            Some("http://main.example:8501")
        );
    }

    /// The deployment the supervisor passes (`--deployment`) is the worker's
    /// settings' (the worker reported its CPU and memory limits as absent and not
    /// enforced), and a flag that is not its JSON is refused.
    #[test]
    fn a_worker_takes_its_deployment_as_applied() {
        use crate::workers::limits::Enforcement;
        let applied = AppliedDeployment::of(
            &Deployment {
                environment: Some("staging".into()),
                cpu_limit: Some("500m".into()),
                memory_limit: Some("256Mi".into()),
                timeout_secs: Some(2.0),
            },
            crate::workers::Enforcements {
                cpu_limit: Enforcement::AffinityAndCgroup,
                memory_limit: Enforcement::Cgroup,
                timeout: Enforcement::RequestDeadline,
            },
        );
        let argv = |deployment: &str| {
            [
                "worker",
                "--model",
                "m",
                "--model-dir",
                "/models/m",
                "--rest-addr",
                "127.0.0.1:1",
                "--state-dir",
                "/state/m-1",
                "--deployment",
                deployment,
            ]
            .map(String::from)
        };
        let json = serde_json::to_string(&applied).unwrap();
        let worker = Cli::try_parse_from(argv(&json)).unwrap().worker;
        let s = worker.settings().unwrap();
        assert_eq!(s.worker_deployment.as_ref(), Some(&applied));
        assert_eq!(crate::workers::applied_deployment(&s, "m"), Some(&applied));
        for bad in ["{}", "500m", r#"{"cpu_limit": 1}"#] {
            assert!(Cli::try_parse_from(argv(bad)).is_err(), "{bad}");
        }
    }

    /// The response cache's tiers reach a worker as its main server has them (a
    /// deployed model kept a 256 MiB tier of its own under `--cache-max-bytes 0`,
    /// and never used `--redis-url`): the sizes and the timeout as flags, the Redis
    /// URL, which may hold a password, only in the environment; and the in-process
    /// tier keeps within a quarter of the deployment's memory limit.
    #[test]
    fn a_worker_takes_the_response_cache_of_its_main_server() {
        use crate::workers::limits::Enforcement;
        let url = "redis://:s3cretPW@cache.example:6380/2";
        let main = ServeArgs {
            cache_max_bytes: Some(0),
            redis_url: Some(url.into()),
            redis_timeout_ms: Some(40),
            ..ServeArgs::default()
        }
        .into_settings()
        .unwrap();
        let inherited = Inherited::of(&main);
        let args = inherited.args();
        assert!(
            args.contains(&"--cache-max-bytes=0".to_string()),
            "{args:?}"
        );
        assert!(
            args.contains(&"--redis-timeout-ms=40".to_string()),
            "{args:?}"
        );
        assert!(!args.iter().any(|a| a.contains("s3cretPW")), "{args:?}");
        assert!(!format!("{inherited:?}").contains("s3cretPW"));
        assert_eq!(
            inherited.environment(),
            vec![(REDIS_URL_ENV, url.to_string())]
        );
        assert!(Inherited::of(&Settings::default()).environment().is_empty());

        let argv = |extra: &[String]| {
            let mut argv: Vec<String> = [
                "worker",
                "--model",
                "m",
                "--model-dir",
                "/models/m",
                "--rest-addr",
                "127.0.0.1:1",
                "--state-dir",
                "/state/m-1",
            ]
            .map(String::from)
            .to_vec();
            argv.extend_from_slice(extra);
            argv
        };
        let mut worker = Cli::try_parse_from(argv(&args)).unwrap().worker;
        // What `take_supervisor_token` reads from `REDIS_URL_ENV`.
        worker.inherited.redis_url = inherited.redis_url.clone();
        let s = worker.settings().unwrap();
        assert_eq!(s.cache_max_bytes, 0);
        assert_eq!(s.redis_url.as_deref(), Some(url));
        assert_eq!(s.redis_timeout, Duration::from_millis(40));

        // A memory limit bounds the in-process tier to a quarter of it.
        let limited = |memory_limit: &str, cache_max_bytes: u64| {
            let applied = AppliedDeployment::of(
                &Deployment {
                    memory_limit: Some(memory_limit.into()),
                    ..Deployment::default()
                },
                crate::workers::Enforcements {
                    cpu_limit: Enforcement::None,
                    memory_limit: Enforcement::Cgroup,
                    timeout: Enforcement::None,
                },
            );
            let mut extra = vec![
                "--deployment".to_string(),
                serde_json::to_string(&applied).unwrap(),
            ];
            extra.push(format!("--cache-max-bytes={cache_max_bytes}"));
            let worker = Cli::try_parse_from(argv(&extra)).unwrap().worker;
            worker.settings().unwrap().cache_max_bytes
        };
        assert_eq!(limited("256Mi", 256 << 20), 64 << 20);
        assert_eq!(limited("4Gi", 256 << 20), 256 << 20);
        assert_eq!(limited("256Mi", 0), 0);
    }

    /// `Inherited::args` writes a flag for every field, under clap's own name: what
    /// it writes parses back to the same value (a field added later needs no
    /// hand-written flag name), and a field not given writes nothing.
    #[test]
    fn inherited_settings_survive_the_command_line() {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            inherited: Inherited,
        }
        let given = Inherited::of(&ServeArgs::default().into_settings().unwrap());
        let args = given.args();
        let back = Only::try_parse_from(std::iter::once("w".to_string()).chain(args.clone()))
            .unwrap()
            .inherited;
        assert_eq!(back, given);
        let fields = serde_json::to_value(&given).unwrap();
        assert_eq!(args.len(), fields.as_object().unwrap().len(), "{args:?}");
        assert!(Inherited::default().args().is_empty());
        let bad = Only::try_parse_from(["w", "--model-defaults", "{\"batchin\": {}}"]);
        assert!(bad.is_err());
    }
}
