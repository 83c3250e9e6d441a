//! `ferroserve models list|status|load|unload|delete`, `ferroserve upload`,
//! `ferroserve predict` and `ferroserve status` against a running server: what the
//! old services' `server.sh status` and their curl scripts did, with progress bars
//! (indicatif, hidden when stderr is not a terminal) for uploads and file
//! predictions. Exit codes: see [`super::client`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::client::{note, print_line, print_table, Client, Connection, OutputFormat, Stdout};
use super::rows::{in_file, InputRows};

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Every model with its versions, states and labels.
    List {
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        #[command(flatten)]
        connection: Connection,
    },
    /// One model: its versions, states, errors, labels and recent events.
    Status {
        model: String,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        #[command(flatten)]
        connection: Connection,
    },
    /// Load (or reload) a model from its files (V2 repository load).
    Load {
        model: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Stop serving a model, keeping its files (V2 repository unload).
    Unload {
        model: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Stop serving a model and delete its files.
    Delete {
        model: String,
        /// Delete without asking (needed when stdin is not a terminal)
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        connection: Connection,
    },
}

/// `ferroserve upload`.
#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// The model file (model.onnx, model.pkl, model.joblib, …)
    pub file: PathBuf,
    /// The model's name [default: the file name without its extension]
    #[arg(long)]
    pub model: Option<String>,
    /// The version to create, a positive integer without leading zeros [default:
    /// the next one]; sent as written, so the server refuses what it refuses
    #[arg(long)]
    pub version: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

/// `ferroserve predict`.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// The model to ask
    pub model: String,
    /// Rows to predict: JSON lines (an object of named features, or a list of values,
    /// per line), or from a file named .csv, .tsv or .txt CSV with a header of feature
    /// names; `-` reads JSON lines from stdin
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Where the answers go, one JSON line per row [default: stdout]
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Rows per request
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// A version number or label [default: the latest]
    #[arg(long)]
    pub version: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn labels_text(labels: &Value) -> String {
    labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The rows of `/models/status` for a table: model, version, state, labels, error.
fn model_rows(models: &[Value]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for m in models {
        let name = text(&m["model_id"]);
        let labels = labels_text(&m["labels"]);
        let versions = m["versions"].as_array().cloned().unwrap_or_default();
        if versions.is_empty() {
            let state = if m["stopped"] == true { "STOPPED" } else { "-" };
            let error = text(&m["config_error"]);
            rows.push(vec![
                name.clone(),
                "-".into(),
                state.into(),
                labels.clone(),
                error,
            ]);
        }
        for v in versions {
            rows.push(vec![
                name.clone(),
                text(&v["version"]),
                text(&v["state"]),
                labels.clone(),
                text(&v["error"]),
            ]);
        }
    }
    rows
}

pub async fn models(command: ModelsCommand) -> anyhow::Result<i32> {
    let timeout = Duration::from_secs(120);
    match command {
        ModelsCommand::List { output, connection } => {
            let client = Client::new(&connection, timeout)?;
            let answer = client.get("/models/status").await?;
            let models = client.field(&answer, "models", Value::is_array)?;
            let models = models.as_array().cloned().unwrap_or_default();
            match output {
                OutputFormat::Json => print_line(serde_json::to_string_pretty(&answer)?)?,
                OutputFormat::Table => print_table(
                    &["MODEL", "VERSION", "STATE", "LABELS", "ERROR"],
                    &model_rows(&models),
                )?,
            }
        }
        ModelsCommand::Status {
            model,
            output,
            connection,
        } => {
            Client::name(&model)?;
            let client = Client::new(&connection, timeout)?;
            let answer = client.get("/models/status").await?;
            let Some(m) = client
                .field(&answer, "models", Value::is_array)?
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["model_id"] == model.as_str())
                .cloned()
            else {
                // The server answered; it lists no such model.
                return Err(super::client::ClientError::NotFound(format!(
                    "the server at {} has no model {model:?} (`ferroserve models list` \
                     lists its models)",
                    client.server_name()
                ))
                .into());
            };
            match output {
                OutputFormat::Json => print_line(serde_json::to_string_pretty(&m)?)?,
                OutputFormat::Table => {
                    print_table(
                        &["MODEL", "VERSION", "STATE", "LABELS", "ERROR"],
                        &model_rows(std::slice::from_ref(&m)),
                    )?;
                    for e in m["recent_events"].as_array().into_iter().flatten() {
                        print_line(format_args!(
                            "  event: {} {} {}",
                            text(&e["kind"]),
                            text(&e["version"]),
                            text(&e["detail"])
                        ))?;
                    }
                }
            }
        }
        ModelsCommand::Load { model, connection } => {
            let client = Client::new(&connection, timeout)?;
            client
                .post(
                    &format!("/v2/repository/models/{}/load", Client::segment(&model)?),
                    &json!({}),
                )
                .await?;
            // The V2 answer to a load is `{}`, which any JSON server can give: the
            // versions' states are asked for, and said.
            let answer = client.get("/models/status").await?;
            let models = client.field(&answer, "models", Value::is_array)?;
            let states: Vec<String> = models
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["model_id"] == model.as_str())
                .flat_map(|m| m["versions"].as_array().cloned().unwrap_or_default())
                .map(|v| format!("version {} {}", text(&v["version"]), text(&v["state"])))
                .collect();
            if states.is_empty() {
                note(format_args!("model {model} loaded"));
            } else {
                note(format_args!("model {model} loaded ({})", states.join(", ")));
            }
        }
        ModelsCommand::Unload { model, connection } => {
            let client = Client::new(&connection, timeout)?;
            client
                .post(
                    &format!("/v2/repository/models/{}/unload", Client::segment(&model)?),
                    &json!({}),
                )
                .await?;
            // `{}` again (see load): a ferroserve server lists its models.
            let answer = client.get("/models/status").await?;
            client.field(&answer, "models", Value::is_array)?;
            note(format_args!("model {model} unloaded (its files are kept)"));
        }
        ModelsCommand::Delete {
            model,
            yes,
            connection,
        } => {
            if !yes {
                use std::io::IsTerminal;
                if !std::io::stdin().is_terminal() {
                    bail!("deleting {model:?} removes its files: pass --yes to confirm");
                }
                // A prompt: no newline. A closed standard error loses it, as `note`.
                let _ = write!(
                    std::io::stderr(),
                    "Delete model {model:?} and all its files? [y/N] "
                );
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                if !matches!(line.trim(), "y" | "Y" | "yes") {
                    note("not deleted");
                    return Ok(super::client::EXIT_FAILED);
                }
            }
            let client = Client::new(&connection, timeout)?;
            let answer = client
                .delete(&format!("/delete_model/{}", Client::segment(&model)?))
                .await?;
            client.field(&answer, "deleted", Value::is_boolean)?;
            note(format_args!("model {model} deleted"));
        }
    }
    Ok(0)
}

/// `ferroserve upload FILE --model NAME [--version N]`: the file streamed with a
/// progress bar; prints the server's answer (the new version's status).
pub async fn upload(args: UploadArgs) -> anyhow::Result<i32> {
    if let Some(m) = &args.model {
        Client::name(m)?;
    }
    let file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let metadata = file.metadata().await?;
    if !metadata.is_file() {
        bail!(
            "{} is not a file: upload takes one model file",
            args.file.display()
        );
    }
    let len = metadata.len();
    // The server reads the model's format from the name's extension (and the
    // model's name from it, without --model): a name that is not UTF-8 goes with
    // its other bytes replaced, which keeps the extension.
    let name = args
        .file
        .file_name()
        .context("the file has no name")?
        .to_string_lossy()
        .into_owned();
    let bar = progress_bar(
        len,
        "uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    );
    let counted = {
        let bar = bar.clone();
        futures::TryStreamExt::inspect_ok(
            tokio_util::io::ReaderStream::new(file),
            move |chunk: &bytes::Bytes| bar.inc(chunk.len() as u64),
        )
    };
    let part =
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(counted), len)
            .file_name(name);
    let mut form = reqwest::multipart::Form::new();
    if let Some(m) = &args.model {
        form = form.text("model_id", m.clone());
    }
    if let Some(v) = &args.version {
        form = form.text("version", v.clone());
    }
    form = form.part("file", part);
    // A large model takes long to send and to check: no overall timeout.
    let client = Client::new(&args.connection, Duration::from_secs(24 * 3600))?;
    let answer = client
        .send(
            client
                .http
                .post(client.url("/upload_model"))
                .multipart(form),
        )
        .await;
    bar.finish_and_clear();
    let answer = answer?;
    client.field(&answer, "model_id", Value::is_string)?;
    note(format_args!(
        "uploaded {} as model {} version {}",
        args.file.display(),
        text(&answer["model_id"]),
        text(&answer["version"])
    ));
    print_line(serde_json::to_string_pretty(&answer)?)?;
    Ok(0)
}

/// `ferroserve predict MODEL --input FILE [--output FILE]`: the rows in batches
/// through the simple API, one answer per row as a JSON line
/// (`{"prediction": …, "probabilities": …}`), with a progress bar.
pub async fn predict(args: PredictArgs) -> anyhow::Result<i32> {
    if args.batch_size == 0 {
        return Err(
            super::client::ClientError::Usage("--batch-size must be at least 1".into()).into(),
        );
    }
    Client::name(&args.model)?;
    let mut input = InputRows::open(&args.input)?;
    let mut batch = input.next_batch(args.batch_size)?;
    if batch.0.is_empty() {
        bail!("{} holds no rows", args.input.display());
    }
    // An --output file (a link's target for a link) is written under a temporary
    // name and renamed over it only once every row is answered: a failure leaves
    // the old file whole. A device or a pipe is written as it is, never truncated;
    // `-` and /dev/stdout are the standard output.
    let output = args.output.as_deref().map(output_target).transpose()?;
    let temp = match &output {
        Some(Output::File(path)) => Some(TempOutput::new(path)?),
        _ => None,
    };
    let mut out: Box<dyn Write> = match (&temp, &output) {
        (Some(t), _) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(&t.temp)
                .with_context(|| format!("cannot create {}", t.temp.display()))?,
        )),
        (None, Some(Output::Special(path))) => Box::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?,
        )),
        _ => Box::new(std::io::BufWriter::new(Stdout)),
    };
    let client = Client::new(&args.connection, Duration::from_secs(600))?;
    // The rows are read a batch at a time: how many there are is known at the end.
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("predicting {spinner} {pos} rows {per_sec} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut predicted = 0usize;
    while !batch.0.is_empty() {
        let (rows, lines) = &batch;
        let mut body = json!({"model_id": args.model, "features": rows});
        if let Some(v) = &args.version {
            body["version"] = match v.parse::<u64>() {
                Ok(n) => json!(n),
                Err(_) => json!(v),
            };
        }
        let answer = match client.post("/predict", &body).await {
            Ok(a) => a,
            Err(e) => {
                bar.abandon();
                return Err(in_file(e, rows, lines, &args.input).into());
            }
        };
        let predictions = answer["prediction"]
            .as_array()
            .context("the server's answer has no list of predictions")
            .map_err(|e| super::client::ClientError::Server {
                status: 200,
                message: e.to_string(),
            })?;
        if predictions.len() != rows.len() {
            return Err(super::client::ClientError::Server {
                status: 200,
                message: format!("{} predictions for {} rows", predictions.len(), rows.len()),
            }
            .into());
        }
        let probabilities = answer["probabilities"].as_array();
        for (i, p) in predictions.iter().enumerate() {
            let mut line = json!({"prediction": p});
            if let Some(probs) = probabilities.and_then(|ps| ps.get(i)) {
                line["probabilities"] = probs.clone();
            }
            // A Value displays as its compact JSON; written as an io::Error on
            // failure, so that a closed stdout is told apart (`StdoutClosed`).
            writeln!(out, "{line}")?;
        }
        predicted += rows.len();
        bar.inc(rows.len() as u64);
        // What came from stdin is answered as it comes, a batch at a time.
        if temp.is_none() {
            out.flush()?;
        }
        batch = match input.next_batch(args.batch_size) {
            Ok(b) => b,
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        };
    }
    out.flush()?;
    drop(out);
    if let Some(t) = temp {
        t.commit()?;
    }
    bar.finish_and_clear();
    note(format_args!(
        "{predicted} rows predicted with {}",
        args.model
    ));
    Ok(0)
}

/// Where `predict --output` writes.
enum Output {
    /// A plain file, or none yet: written under a temporary name and renamed.
    File(PathBuf),
    /// A device or a pipe: written as it is.
    Special(PathBuf),
    /// The standard output (`-`, /dev/stdout).
    Stdout,
}

fn output_target(path: &Path) -> anyhow::Result<Output> {
    let given = path.as_os_str();
    if given == "-" || given == "/dev/stdout" || given == "/dev/fd/1" || given == "/proc/self/fd/1"
    {
        return Ok(Output::Stdout);
    }
    // A link is followed: its target is the file replaced or created (the link
    // stays).
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(target) => target,
            Err(_) => {
                let link = std::fs::read_link(path)
                    .with_context(|| format!("cannot read the link {}", path.display()))?;
                path.parent().unwrap_or(Path::new(".")).join(link)
            }
        },
        _ => path.to_path_buf(),
    };
    match std::fs::metadata(&target) {
        Ok(m) if m.is_file() => Ok(Output::File(target)),
        Ok(m) if m.is_dir() => anyhow::bail!("{} is a directory", path.display()),
        Ok(_) => Ok(Output::Special(target)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Output::File(target)),
        Err(e) => Err(e).with_context(|| format!("cannot use {}", path.display())),
    }
}

/// `predict --output`'s file while it is written: `.<name>.<pid>.tmp` beside it,
/// renamed over it by [`TempOutput::commit`], removed when dropped before that, or
/// when Ctrl-C, SIGTERM or SIGHUP ends the command ([`removed_on_signals`]).
struct TempOutput {
    temp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl TempOutput {
    fn new(path: &Path) -> anyhow::Result<TempOutput> {
        let temp = crate::jobs::io::temp_path(path, &std::process::id().to_string())
            .with_context(|| format!("{} names no file", path.display()))?;
        removed_on_signals(Some(&temp));
        Ok(TempOutput {
            temp,
            path: path.to_path_buf(),
            committed: false,
        })
    }

    fn commit(mut self) -> anyhow::Result<()> {
        // The file replaced keeps its permissions (a 600 file became 644).
        if let Ok(m) = std::fs::metadata(&self.path) {
            let _ = std::fs::set_permissions(&self.temp, m.permissions());
        }
        removed_on_signals(None);
        std::fs::rename(&self.temp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.committed {
            removed_on_signals(None);
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// The file [`on_signal`] removes (a C string, leaked: the handler may read it at
/// any moment), or null.
static REMOVED_ON_SIGNALS: std::sync::atomic::AtomicPtr<libc::c_char> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// Has Ctrl-C, SIGTERM and SIGHUP remove `file` before they end the process (as
/// they would have: the exit status is still the signal's), or, with `None`, no
/// file. The command may be blocked reading its input, so the file goes in the
/// handler itself (`unlink` is async-signal-safe); a signal the process was started
/// ignoring (`nohup`, a shell's background job) stays ignored.
fn removed_on_signals(file: Option<&Path>) {
    use std::os::unix::ffi::OsStrExt;
    let Some(file) = file else {
        REMOVED_ON_SIGNALS.store(std::ptr::null_mut(), std::sync::atomic::Ordering::SeqCst);
        return;
    };
    let Ok(c) = std::ffi::CString::new(file.as_os_str().as_bytes()) else {
        return;
    };
    REMOVED_ON_SIGNALS.store(c.into_raw(), std::sync::atomic::Ordering::SeqCst);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sigaction with a zeroed action but for its handler, an
        // `extern "C"` function that only calls async-signal-safe functions; the
        // old action is read first so that an ignored signal stays ignored.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Removes [`REMOVED_ON_SIGNALS`]'s file, then ends the process by the signal's
/// default action.
extern "C" fn on_signal(signal: libc::c_int) {
    let file = REMOVED_ON_SIGNALS.load(std::sync::atomic::Ordering::SeqCst);
    // SAFETY: `unlink`, `signal` and `raise` are async-signal-safe; `file` is null
    // or a C string never freed.
    unsafe {
        if !file.is_null() {
            libc::unlink(file);
        }
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// `ferroserve status`: health, then every model and version, as the old
/// `server.sh status` told. A server that is live and not ready (loading its
/// models at start, draining at shutdown: `/healthz` answers 503 then) is reported
/// as such, with its models' states, which are what says why.
pub async fn status(connection: Connection, output: OutputFormat) -> anyhow::Result<i32> {
    let client = Client::new(&connection, Duration::from_secs(30))?;
    let health = client.get_accepting("/healthz", &[503]).await?;
    client.field(&health, "live", Value::is_boolean)?;
    client.field(&health, "ready", Value::is_boolean)?;
    let server = client.get("/v2").await?;
    client.field(&server, "name", Value::is_string)?;
    let models = client.get("/models/status").await?;
    client.field(&models, "models", Value::is_array)?;
    match output {
        OutputFormat::Json => print_line(serde_json::to_string_pretty(
            &json!({"health": health, "server": server, "models": models["models"]}),
        )?)?,
        OutputFormat::Table => {
            print_line(format_args!(
                "{} {} at {}: live {}, ready {}",
                text(&server["name"]),
                text(&server["version"]),
                client.server_name(),
                health["live"],
                health["ready"]
            ))?;
            let list = models["models"].as_array().cloned().unwrap_or_default();
            print_table(
                &["MODEL", "VERSION", "STATE", "LABELS", "ERROR"],
                &model_rows(&list),
            )?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::ClientError;

    /// The server's `row N` counts from the start of each request: the message
    /// names the file's line instead.
    #[test]
    fn batch_errors_name_the_files_lines() {
        let lines: Vec<usize> = (281..=300).collect();
        let batch = vec![json!([1.0]); 20];
        let e = in_file(
            ClientError::Rejected {
                status: 400,
                message: "row 10 has 3 features but row 0 has 4".into(),
            },
            &batch,
            &lines,
            Path::new("big.jsonl"),
        );
        assert_eq!(
            e.to_string(),
            "the server refused the request (400): row 10 (line 291 of big.jsonl) has 3 \
             features but row 0 (line 281 of big.jsonl) has 4 [in the request of lines 281 \
             to 300 of big.jsonl]"
        );
        let e = in_file(
            ClientError::Rejected {
                status: 400,
                message: "feature \"x\" must be a number".into(),
            },
            &batch,
            &lines,
            Path::new("rows.csv"),
        );
        assert!(e
            .to_string()
            .ends_with("[in the request of lines 281 to 300 of rows.csv]"));
        // A value the message quotes is found in the batch.
        let mut batch = batch;
        batch[3] = json!({"x": "abc"});
        let e = in_file(
            ClientError::Rejected {
                status: 400,
                message: "feature value \"abc\" is not a number".into(),
            },
            &batch,
            &lines,
            Path::new("rows.csv"),
        );
        assert_eq!(
            e.to_string(),
            "the server refused the request (400): line 284 of rows.csv: feature value \"abc\" \
             is not a number"
        );
    }

    /// Every row of the input, read as `predict` reads it, a few at a time.
    fn read_rows(path: &Path) -> anyhow::Result<(Vec<Value>, Vec<usize>)> {
        let mut input = InputRows::open(path)?;
        let (mut rows, mut lines) = (Vec::new(), Vec::new());
        loop {
            let (r, l) = input.next_batch(2)?;
            if r.is_empty() {
                return Ok((rows, lines));
            }
            rows.extend(r);
            lines.extend(l);
        }
    }

    #[test]
    fn rows_keep_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("rows.jsonl");
        std::fs::write(&jsonl, "[1,2]\n\n[3,4]\n").unwrap();
        assert_eq!(read_rows(&jsonl).unwrap().1, [1, 3]);
        let csv = dir.path().join("rows.csv");
        std::fs::write(&csv, "a,b\n1,2\n3,x\n").unwrap();
        let (rows, lines) = read_rows(&csv).unwrap();
        assert_eq!(lines, [2, 3]);
        assert_eq!(rows[1]["b"], "x");
        // Windows line ends, and a quoted value over two lines.
        std::fs::write(&csv, "a,b\r\n1,2\r\n\"3\r\n4\",5\r\n6,x\r\n").unwrap();
        assert_eq!(read_rows(&csv).unwrap().1, [2, 3, 5]);
        // Blank lines, and a file larger than the csv reader's buffer.
        let mut text = "a,b\n\n1,2\r\n\r\n".to_string();
        for i in 0..5000 {
            text.push_str(&format!("{i},\"x\ny\"\n"));
        }
        std::fs::write(&csv, text).unwrap();
        let lines = read_rows(&csv).unwrap().1;
        assert_eq!(lines[..3], [3, 5, 7]);
        assert_eq!(lines.last(), Some(&(5 + 2 * 4999)));
    }

    /// CSV has no types: a cell goes as the text it is (a zip code "02134", not
    /// the number 2134, a category the model never saw), and the server reads a
    /// number from it for a numeric input; an empty cell is the empty text, as
    /// batch jobs read it.
    #[test]
    fn csv_cells_go_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("rows.csv");
        std::fs::write(&csv, "zip,x,empty\n02134,5.1,\n").unwrap();
        let (rows, _) = read_rows(&csv).unwrap();
        assert_eq!(rows, [json!({"zip": "02134", "x": "5.1", "empty": ""})]);
    }

    /// A row can hold one value of a name: a CSV column or a JSON key given twice
    /// is refused, naming it and its line (it kept the last value).
    #[test]
    fn a_name_given_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("rows.csv");
        std::fs::write(&csv, "a,b,a\n1,2,3\n").unwrap();
        let e = format!("{:#}", read_rows(&csv).unwrap_err());
        assert!(
            e.contains("line 1 of") && e.contains("two columns named \"a\""),
            "{e}"
        );
        let jsonl = dir.path().join("rows.jsonl");
        std::fs::write(&jsonl, "{\"a\": 1}\n{\"a\": 1, \"b\": 2, \"a\": 3}\n").unwrap();
        let e = format!("{:#}", read_rows(&jsonl).unwrap_err());
        assert_eq!(
            e,
            format!("line 2 of {}: field \"a\" is given twice", jsonl.display())
        );
    }
}
