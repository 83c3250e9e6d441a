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
        args: Box<ServeArgs>,
    },
    /// Bearer tokens for --auth-tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a fresh random token and the entry to add to the tokens file (which
    /// stores only the token's SHA-256).
    New {
        /// Name logged with every management action made with this token
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: inference, management, metrics
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
}

fn token_new(name: &str, scopes: &[String]) -> anyhow::Result<()> {
    let scopes = scopes
        .iter()
        .map(|s| {
            ferroserve::auth::Scope::parse(s.trim()).with_context(|| {
                format!("unknown scope {s:?} (known: inference, management, metrics)")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (token, entry) =
        ferroserve::auth::new_token(name, &scopes).map_err(|e| anyhow::anyhow!(e))?;
    println!("# The token (shown once; give it to the client as `Authorization: Bearer <token>`):");
    println!("{token}");
    println!();
    println!("# Add this entry to the --auth-tokens file (it holds only the token's SHA-256):");
    print!("{entry}");
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
        Command::Token {
            command: TokenCommand::New { name, scopes },
        } => token_new(&name, &scopes),
        Command::Serve { config, args } => {
            let settings = settings_from(config, *args)?;
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
