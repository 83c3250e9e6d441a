//! The `ferroserve` command: parse flags → settings → run the server.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferroserve::auth::Scope;
use ferroserve::cli::client::{note, print_line, stdout_closed};
use ferroserve::server::{run, Listeners};
use ferroserve::settings::{LogFormat, ServeArgs, Settings};
use ferroserve::tfs_flags::{self, TfsArgs};

/// How long the server's process waits, once it has shut down, for blocking tasks
/// still running (a model version loading or warming up) before it exits anyway.
const SHUTDOWN_LEFTOVERS: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Parser)]
#[command(
    name = "ferroserve",
    version,
    about = "A fast, safe machine-learning model server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every model in the model repository over REST (and gRPC).
    ///
    /// Settings come from defaults, then the TOML file given by --config, then
    /// FERROSERVE_* environment variables, then these flags.
    Serve {
        /// TOML file with any of the settings below (keys as the flags, with underscores)
        #[arg(long, env = "FERROSERVE_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: Box<ServeArgs>,
        #[command(flatten)]
        tfs: Box<TfsArgs>,
        /// Write the server's pid to this file once it listens (removed at exit);
        /// `ferroserve stop --pid-file` reads it
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
    },
    /// Serve one deployed model in its own process (started by the server's
    /// supervisor for `POST /deploy`; not meant to be run by hand).
    Worker(Box<ferroserve::workers::worker::WorkerArgs>),
    /// Stop the server a --pid-file names (SIGTERM, then wait for it to drain and exit).
    Stop {
        #[arg(long, value_name = "FILE")]
        pid_file: PathBuf,
        /// Seconds to wait for the server to exit
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
    /// A running server's health and every model's versions and states.
    Status {
        #[arg(long, value_enum, default_value_t)]
        output: ferroserve::cli::client::OutputFormat,
        #[command(flatten)]
        connection: ferroserve::cli::client::Connection,
    },
    /// Models on a running server: list, status, load, unload, delete.
    Models {
        #[command(subcommand)]
        command: ferroserve::cli::models::ModelsCommand,
    },
    /// Upload a model file to a running server, with a progress bar.
    Upload(ferroserve::cli::models::UploadArgs),
    /// Predict the rows of a file (JSON lines or CSV) with a model of a running server.
    Predict(ferroserve::cli::models::PredictArgs),
    /// The metadata store: its status, and applying migrations.
    ///
    /// Takes the serve command's settings (--config, FERROSERVE_*, flags), of which
    /// --database-url, --state-dir and --model-repository say where the store is.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Jobs on a running server: submit, list, status, watch, cancel.
    Jobs {
        #[command(subcommand)]
        command: ferroserve::cli::jobs::JobsCommand,
    },
    /// Bearer tokens for --auth-tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Print the database kind, its URL (without password), the schema version and
    /// rows per table, as JSON.
    Status {
        #[arg(long, env = "FERROSERVE_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: Box<ServeArgs>,
    },
    /// Apply the migrations this binary has (the server also does at start).
    Migrate {
        #[arg(long, env = "FERROSERVE_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: Box<ServeArgs>,
    },
}

/// `ferroserve db status|migrate`.
fn db_command(command: DbCommand) -> anyhow::Result<()> {
    let (config, args, migrate) = match command {
        DbCommand::Status { config, args } => (config, args, false),
        DbCommand::Migrate { config, args } => (config, args, true),
    };
    let settings = settings_from(config, *args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let url = settings.database_url();
        let store = if migrate {
            ferroserve::store::Store::open(&url, settings.database_timeout, true).await
        } else {
            ferroserve::store::Store::open_for_status(&url, settings.database_timeout).await
        }
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let status = store.status().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        print_line(serde_json::to_string_pretty(&status)?)?;
        Ok(())
    })
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a fresh random token and the entry to add to the tokens file (which
    /// stores only the token's SHA-256).
    New {
        /// Name logged with every management action made with this token (1 to 64
        /// printable ASCII characters)
        #[arg(long, value_parser = token_name)]
        name: String,
        /// Comma-separated scopes: inference, management, metrics
        #[arg(long, value_delimiter = ',', required = true, value_parser = token_scope)]
        scopes: Vec<Scope>,
    },
}

/// `--name`, checked as the tokens file checks it, so a bad one is a usage error.
fn token_name(name: &str) -> Result<String, String> {
    ferroserve::auth::check_token_name(name).map(|()| name.to_string())
}

fn token_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s.trim())
        .ok_or_else(|| format!("unknown scope {s:?} (known: inference, management, metrics)"))
}

fn token_new(name: &str, scopes: &[Scope]) -> anyhow::Result<()> {
    let (token, entry) =
        ferroserve::auth::new_token(name, scopes).map_err(|e| anyhow::anyhow!(e))?;
    print_line(
        "# The token (shown once; give it to the client as `Authorization: Bearer <token>`):",
    )?;
    print_line(&token)?;
    print_line("")?;
    print_line("# Add this entry to the --auth-tokens file (it holds only the token's SHA-256):")?;
    print_line(entry.trim_end())?;
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERROSERVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

/// Runs a client command on a small runtime and exits with its code: the
/// command's own, or the class of its error (see `ferroserve::cli::client`).
fn client_command(
    command: impl std::future::Future<Output = anyhow::Result<i32>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match runtime.block_on(command) {
        Ok(code) => std::process::exit(code),
        // `| head -1` has read what it wanted: no error (`StdoutClosed`).
        Err(e) if stdout_closed(&e) => std::process::exit(0),
        Err(e) => {
            note(format_args!("error: {e:#}"));
            std::process::exit(ferroserve::cli::client::exit_code(&e))
        }
    }
}

fn settings_from(config: Option<PathBuf>, args: ServeArgs) -> anyhow::Result<Settings> {
    let file = match config {
        Some(path) => ServeArgs::from_toml_file(&path)?,
        None => ServeArgs::default(),
    };
    Ok(file.overridden_by(args).into_settings()?)
}

/// Runs the command; an error ends the process with its message ([`error_text`],
/// exit code 1), but quietly with 0 when it is the
/// standard output closed, and without a panic when the standard error is.
fn main() {
    // SAFETY: the first thing the process does, before any thread (the tokio
    // runtime, TensorFlow's own) starts; see the function.
    unsafe { ferroserve::backends::tensorflow::default_onednn_off() };
    if let Err(e) = command() {
        if stdout_closed(&e) {
            std::process::exit(0);
        }
        note(format_args!("{}", error_text(&e)));
        std::process::exit(1);
    }
}

/// An error as every command prints it: `error: ` and its causes on one line, as a
/// client command's, never with the backtrace that `anyhow` captures and prints in
/// its `Debug` form when `RUST_BACKTRACE` is set (a panic still prints its
/// backtrace then).
fn error_text(e: &anyhow::Error) -> String {
    format!("error: {e:#}")
}

/// The ids of the arguments `matches` holds that a `FERROSERVE_*` variable gave,
/// and those the command line gave.
fn value_sources(
    matches: &clap::ArgMatches,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let (mut environment, mut command_line) = (Default::default(), Default::default());
    for id in matches.ids() {
        let set: &mut std::collections::BTreeSet<String> = match matches.value_source(id.as_str()) {
            Some(clap::parser::ValueSource::EnvVariable) => &mut environment,
            Some(clap::parser::ValueSource::CommandLine) => &mut command_line,
            _ => continue,
        };
        set.insert(id.as_str().to_string());
    }
    (environment, command_line)
}

fn command() -> anyhow::Result<()> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let as_tfs = argv.first().is_some_and(|a| tfs_flags::invoked_as_tfs(a));
    let argv = match tfs_flags::normalize_args(argv) {
        Ok(a) => a,
        Err(e) => {
            note(format_args!("error: {e}"));
            std::process::exit(2);
        }
    };
    let mut command = <Cli as clap::CommandFactory>::command();
    if as_tfs {
        // Help and usage errors name the program as invoked, without `serve`.
        command = tfs_flags::usage_as_invoked(command);
    }
    let matches = command.get_matches_from(argv);
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Which of the serve command's settings the environment gave and which the
    // command line: a TF Serving flag overrides the first, not the second.
    let (mut from_environment, mut from_command_line) = (Default::default(), Default::default());
    if let Some(serve) = matches.subcommand_matches("serve") {
        (from_environment, from_command_line) = value_sources(serve);
    }
    match cli.command {
        Command::Token {
            command: TokenCommand::New { name, scopes },
        } => token_new(&name, &scopes),
        Command::Db { command } => db_command(command),
        Command::Worker(mut args) => {
            // Before any thread starts (the environment is changed).
            args.take_supervisor_token();
            init_logging(args.log_format.unwrap_or(LogFormat::Human));
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = args.threads {
                // The CPU limit: as many async threads as cores it may use.
                runtime.worker_threads(threads.max(1));
            }
            let runtime = runtime
                .enable_all()
                .thread_name("ferroserve-worker")
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on((*args).run(shutdown_signal()))
        }
        Command::Jobs { command } => client_command(ferroserve::cli::jobs::run(command)),
        Command::Models { command } => client_command(ferroserve::cli::models::models(command)),
        Command::Upload(args) => client_command(ferroserve::cli::models::upload(args)),
        Command::Predict(args) => client_command(ferroserve::cli::models::predict(args)),
        Command::Status { output, connection } => {
            client_command(ferroserve::cli::models::status(connection, output))
        }
        Command::Stop { pid_file, timeout } => {
            let Ok(timeout) = std::time::Duration::try_from_secs_f64(timeout) else {
                note("error: --timeout must be a number of seconds");
                std::process::exit(2);
            };
            match ferroserve::cli::service::stop(&pid_file, timeout) {
                Ok(code) => std::process::exit(code),
                Err(e) => {
                    note(format_args!("error: {e:#}"));
                    std::process::exit(ferroserve::cli::client::EXIT_FAILED)
                }
            }
        }
        Command::Serve {
            config,
            args,
            tfs,
            pid_file,
        } => {
            if tfs.version {
                print_line(format_args!(
                    "ferroserve {} (a tensorflow_model_server drop-in)",
                    env!("CARGO_PKG_VERSION")
                ))?;
                return Ok(());
            }
            let mut tfs = *tfs;
            tfs.from_environment = from_environment;
            tfs.from_command_line = from_command_line;
            if as_tfs {
                tfs = tfs.with_container_env(|k| std::env::var(k).ok());
            }
            let args = tfs.fold_into(*args)?;
            let mut settings = settings_from(config, args)?;
            // Before `finish`, whose warnings (a flag ignored) were lost otherwise.
            init_logging(settings.log_format);
            tfs.finish(&mut settings)?;
            // Deployed models' workers are this same binary.
            settings.worker_binary = std::env::current_exe().ok();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("ferroserve-io")
                .build()
                .context("cannot start the async runtime")?;
            let served = runtime.block_on(async move {
                let listeners = Listeners::bind(&settings).await?;
                // Written once the ports are held, removed when the server returns.
                let _pid_file = match &pid_file {
                    Some(path) => Some(ferroserve::cli::service::PidFile::create(path)?),
                    None => None,
                };
                run(settings, listeners, shutdown_signal()).await
            });
            // Dropping the runtime would wait for every blocking task, and a model
            // version still loading or warming up (a SavedModel's load, a warm-up
            // replay) is one: the process went on for as long as the load took after
            // it had logged "shut down". `run` has drained the requests and flushed
            // the store; a load in progress is not waited for.
            runtime.shutdown_timeout(SHUTDOWN_LEFTOVERS);
            // A native library's thread may still run (TensorFlow's, warming up a
            // version): the C++ static destructors that `exit` runs under it crashed
            // the process, killed by a signal after a clean shutdown. `_exit` skips
            // them; the server has closed everything of its own (store, pid file,
            // listeners) and its log lines are written unbuffered.
            if let Err(e) = &served {
                note(format_args!("{}", error_text(e)));
            }
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            // SAFETY: `_exit` ends the process at once; nothing of Rust's runs after.
            unsafe { libc::_exit(i32::from(served.is_err())) }
        }
    }
}
