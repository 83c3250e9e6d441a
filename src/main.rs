//! The `ferroserve` command: parse flags → settings → run the server.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferroserve::server::{run, Listeners};
use ferroserve::settings::{LogFormat, ServeArgs, Settings};

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
        args: ServeArgs,
    },
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

fn settings_from(config: Option<PathBuf>, args: ServeArgs) -> anyhow::Result<Settings> {
    let file = match config {
        Some(path) => ServeArgs::from_toml_file(&path)?,
        None => ServeArgs::default(),
    };
    Ok(file.overridden_by(args).into_settings()?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, args } => {
            let settings = settings_from(config, args)?;
            init_logging(settings.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("ferroserve-io")
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async move {
                let listeners = Listeners::bind(&settings).await?;
                run(settings, listeners, shutdown_signal()).await
            })
        }
    }
}
