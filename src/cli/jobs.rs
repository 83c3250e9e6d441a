//! `ferroserve jobs submit|list|status|watch|cancel` against a running server.
//!
//! `submit --watch` and `watch` draw a progress bar (indicatif, hidden when stderr
//! is not a terminal) until the job ends, and exit non-zero unless it succeeded.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::client::{note, print_line, Client, Connection};

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Submit a job from a JSON file ({"kind": "score", "spec": {…}}); prints its id.
    Submit {
        spec: PathBuf,
        /// Follow the job with a progress bar until it ends; exit non-zero unless it
        /// succeeded
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// List jobs, newest first.
    List {
        /// queued, running, succeeded, failed or cancelled
        #[arg(long)]
        state: Option<String>,
        /// score or train
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
        #[command(flatten)]
        connection: Connection,
    },
    /// Print a job's record as JSON.
    Status {
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Follow a job with a progress bar until it ends; exit non-zero unless it succeeded.
    Watch {
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Ask a job to stop.
    Cancel {
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

/// Runs a jobs command; answers the process's exit code.
pub async fn run(command: JobsCommand) -> anyhow::Result<i32> {
    match command {
        JobsCommand::Submit {
            spec,
            watch,
            connection,
        } => {
            let text = std::fs::read_to_string(&spec)
                .with_context(|| format!("cannot read {}", spec.display()))?;
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", spec.display()))?;
            let client = Client::new(&connection, Duration::from_secs(30))?;
            let answer = client.post("/v1/jobs", &body).await?;
            let id = client
                .field(&answer, "job_id", Value::is_string)?
                .as_str()
                .unwrap_or_default()
                .to_string();
            print_line(&id)?;
            if watch {
                return follow(&client, &id).await;
            }
            Ok(0)
        }
        JobsCommand::List {
            state,
            kind,
            limit,
            offset,
            connection,
        } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(s) = &state {
                query.append_pair("state", s);
            }
            if let Some(k) = &kind {
                query.append_pair("kind", k);
            }
            query.append_pair("limit", &limit.to_string());
            query.append_pair("offset", &offset.to_string());
            let client = Client::new(&connection, Duration::from_secs(30))?;
            let answer = client.get(&format!("/v1/jobs?{}", query.finish())).await?;
            client.field(&answer, "jobs", Value::is_array)?;
            client.field(&answer, "total", Value::is_u64)?;
            for job in answer["jobs"].as_array().into_iter().flatten() {
                print_line(format_args!(
                    "{}  {:<5}  {:<9}  {:>6.1}%  {}",
                    job["job_id"].as_str().unwrap_or(""),
                    job["kind"].as_str().unwrap_or(""),
                    job["state"].as_str().unwrap_or(""),
                    job["progress"]["fraction"].as_f64().unwrap_or(0.0) * 100.0,
                    job["error"].as_str().unwrap_or(""),
                ))?;
            }
            note(format_args!("{} job(s) in all", answer["total"]));
            Ok(0)
        }
        JobsCommand::Status { id, connection } => {
            let client = Client::new(&connection, Duration::from_secs(30))?;
            let job = client
                .get(&format!("/v1/jobs/{}", Client::segment(&id)?))
                .await?;
            client.field(&job, "state", Value::is_string)?;
            print_line(serde_json::to_string_pretty(&job)?)?;
            Ok(0)
        }
        JobsCommand::Watch { id, connection } => {
            let client = Client::new(&connection, Duration::from_secs(30))?;
            follow(&client, &id).await
        }
        JobsCommand::Cancel { id, connection } => {
            let client = Client::new(&connection, Duration::from_secs(30))?;
            let job = client
                .post(
                    &format!("/v1/jobs/{}/cancel", Client::segment(&id)?),
                    &Value::Null,
                )
                .await?;
            print_line(
                client
                    .field(&job, "state", Value::is_string)?
                    .as_str()
                    .unwrap_or_default(),
            )?;
            Ok(0)
        }
    }
}

/// Polls the job until it ends, drawing its progress; 0 when it succeeded.
async fn follow(client: &Client, id: &str) -> anyhow::Result<i32> {
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:30}] {percent:>3}% {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    loop {
        let job = client
            .get(&format!("/v1/jobs/{}", Client::segment(id)?))
            .await?;
        client.field(&job, "state", Value::is_string)?;
        let progress = &job["progress"];
        if let Some(f) = progress["fraction"].as_f64() {
            bar.set_position((f * 1000.0) as u64);
        }
        let remaining = progress["remaining_ms"]
            .as_u64()
            .map(|ms| format!(", about {}s left", ms / 1000))
            .unwrap_or_default();
        bar.set_message(format!(
            "{}: {} rows read, {} written{remaining}",
            progress["stage"].as_str().unwrap_or(""),
            progress["rows_read"],
            progress["rows_written"],
        ));
        bar.tick();
        match job["state"].as_str().unwrap_or("") {
            "succeeded" => {
                bar.finish_and_clear();
                note(format_args!("job {id} succeeded"));
                print_line(serde_json::to_string_pretty(&job["result"])?)?;
                return Ok(0);
            }
            "failed" => {
                bar.abandon();
                note(format_args!(
                    "job {id} failed: {}",
                    job["error"].as_str().unwrap_or("no reason given")
                ));
                return Ok(1);
            }
            "cancelled" => {
                bar.abandon();
                note(format_args!("job {id} was cancelled"));
                return Ok(1);
            }
            "queued" | "running" => tokio::time::sleep(Duration::from_millis(250)).await,
            other => {
                bar.abandon();
                anyhow::bail!("the server answered no job state for {id} (state {other:?})");
            }
        }
    }
}
