//! Uploads: a model file (and the files sent beside it) streamed into a staging
//! directory inside the model's folder without the model's lock, checked by loading
//! it, then renamed into place as `<version>/` under the lock. The REST upload routes
//! and training jobs ([`publish_files`]) use it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::manage::{audit, deadline, run_locked, summary_under_lock, ModelSummary};
use super::{ApiError, Caller, ServerState};
use crate::backends::load_backend_with;
use crate::model_config_list::is_valid_model_name;
use crate::repository::MAX_VERSION;
use crate::sources::SourcesError;
use crate::store::EventKind;

/// What an upload produced.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadOutcome {
    pub model: String,
    pub version: u64,
    pub bytes: u64,
    /// The files stored in the version directory: the model's first (under the name
    /// its format is stored under, `model.onnx`), then the assets' in their order.
    pub files: Vec<String>,
    /// The model after the upload: whether the new version serves depends on its policy.
    pub summary: ModelSummary,
}

/// An upload in progress: the file is streamed into a staging directory inside the
/// model's folder (`.tmp-upload-*`, which the repository scan ignores) without the
/// model's lock, checked by loading it, then, under the lock, renamed into place as
/// `<version>/`. Dropping it before [`Upload::finish`] removes the staging directory,
/// so nothing partial is ever left where the scan looks; a stalled client holds only
/// its staging directory, never the model.
pub struct Upload {
    model: String,
    version: Option<u64>,
    model_dir: PathBuf,
    /// Whether this upload created the model directory (removed again on failure).
    created_model_dir: bool,
    staging: PathBuf,
    /// The file's name in the staging directory until [`Upload::finish`] sees its
    /// content: the client's file name, sanitized.
    artifact_name: String,
    file: Option<tokio::fs::File>,
    written: u64,
    /// The files sent beside the model (`labels.txt`, `tokenizer.json`), by their
    /// names in the version directory, and the one being written now.
    assets: Vec<String>,
    asset_file: Option<tokio::fs::File>,
    asset_bytes: u64,
    /// SHA-256 of what was written, for the audit trail.
    sha256: sha2::Sha256,
    /// The client's file name, for the audit trail.
    file_name: String,
    caller: Caller,
    limit: u64,
    state: Arc<ServerState>,
    finished: bool,
    /// A training job's version: stored only over a model that training made, as
    /// decided under the model's lock (`crate::jobs::train::foreign_model`).
    trained: bool,
}

/// The name an uploaded file is staged under: the client's file name (its last
/// path component) with every character but letters, digits, `.`, `_` and `-`
/// made `_`, never hidden and never a name the version directory gives another
/// meaning (`config.toml`, `warmup.json`). Any name is accepted: the content says
/// the format (see [`crate::backends::format`]).
fn staging_file_name(file_name: &str) -> String {
    let clean = sanitized_file_name(file_name);
    let clean = clean.trim_start_matches('.');
    if clean.is_empty() || clean == "config.toml" || clean == crate::warmup::WARMUP_FILE {
        "model.bin".to_string()
    } else {
        clean.chars().take(200).collect()
    }
}

/// A client's file name as the version directory stores it: its last path
/// component, every character but letters, digits, `.`, `_` and `-` made `_`.
fn sanitized_file_name(file_name: &str) -> String {
    last_path_component(file_name)
        .chars()
        .map(|c| if is_file_name_char(c) { c } else { '_' })
        .collect()
}

/// The last component of a client's file name: a client may send the path it read
/// the file from (`C:\data\labels.txt`, `../labels.txt`), and only the name
/// is kept, so that nothing lands outside the version directory.
fn last_path_component(file_name: &str) -> &str {
    file_name.rsplit(['/', '\\']).next().unwrap_or_default()
}

/// The characters a stored file's name may have: they mean the same on every file
/// system and in a URL or a config.toml, unquoted.
fn is_file_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// The longest name, in characters, an asset file is stored under.
pub const MAX_ASSET_NAME_CHARS: usize = 200;

/// Why an asset cannot be stored under `name` (its file name's last path
/// component) as it is, if it cannot: it is stored under its own name or not at
/// all, since the model's config.toml names it (`labels = "labels.txt"`), and a
/// name rewritten (`labels (1).txt` to `labels__1_.txt`) would miss it, or two
/// names rewritten alike (`a b.txt`, `a:b.txt`) would collide.
fn asset_name_problem(name: &str) -> Option<String> {
    let mut refused: Vec<char> = Vec::new();
    for c in name.chars().filter(|c| !is_file_name_char(*c)) {
        if !refused.contains(&c) {
            refused.push(c);
        }
    }
    let rule = format!(
        "an asset's name may use only ASCII letters, digits, '.', '_' and '-', and at \
         most {MAX_ASSET_NAME_CHARS} characters: rename the file"
    );
    if !refused.is_empty() {
        let shown: Vec<String> = refused.iter().take(10).map(|c| format!("{c:?}")).collect();
        let more = if refused.len() > 10 { ", ..." } else { "" };
        return Some(format!(
            "cannot be stored under its name, which has {}{more}; {rule}",
            shown.join(", ")
        ));
    }
    let length = name.chars().count();
    (length > MAX_ASSET_NAME_CHARS).then(|| {
        format!("cannot be stored under its name, which is {length} characters long; {rule}")
    })
}

/// The model id an upload uses when none is given: the file name without extension.
pub fn default_model_id(file_name: &str) -> String {
    Path::new(file_name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string()
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The most asset files one upload may carry beside its model: a version needs a
/// few (labels, a tokenizer, a dictionary), and each is a file created on disk, so
/// an upload of empty parts could otherwise fill a directory with any number.
pub const MAX_UPLOAD_ASSETS: usize = 1000;

/// Starts an upload of `file_name` as `model` (version: given, or the next integer).
/// Takes no lock: uploads of one model stream side by side and are serialised only
/// when each moves into place.
pub async fn begin_upload(
    state: Arc<ServerState>,
    model: &str,
    version: Option<u64>,
    file_name: &str,
    caller: Caller,
) -> Result<Upload, ApiError> {
    if !is_valid_model_name(model) {
        return Err(ApiError::InvalidArgument(format!(
            "model_id {model:?} is not valid: use letters, digits, '.', '_' and '-', \
             not starting with '.'"
        )));
    }
    if version.is_some_and(|v| v == 0 || v > MAX_VERSION) {
        return Err(ApiError::InvalidArgument(format!(
            "version must be an integer from 1 to {MAX_VERSION}"
        )));
    }
    let artifact_name = staging_file_name(file_name);
    state.sources.check_uploadable(model)?;
    let model_dir = state.sources.model_dir(model)?.dir;
    if let Some(file) = state.sources.flat_file(model) {
        return Err(ApiError::Conflict(format!(
            "model {model:?} is served from the file {file:?} in the repository root; \
             replace that file to publish a new version, or delete the model first"
        )));
    }
    // The upload's record must not be lost: with the store down, refused before
    // the client sends the file.
    if let Some(store) = &state.store {
        store.check_writable().await?;
    }
    // Checked again under the lock when the file moves into place; this only fails
    // early, before the client sends the whole file.
    if let Some(v) = version {
        if crate::repository::has_version_dir(&model_dir, v) {
            return Err(version_exists(model, v));
        }
    }
    let created_model_dir = !model_dir.exists();
    let staging = model_dir.join(format!(
        ".tmp-upload-{}-{}",
        std::process::id(),
        STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    // Registered first, so the sweep of stale staging never removes it.
    state.sources.staging_started(&staging);
    let mut upload = Upload {
        model: model.to_string(),
        version,
        model_dir,
        created_model_dir,
        staging,
        artifact_name,
        file: None,
        written: 0,
        assets: Vec::new(),
        asset_file: None,
        asset_bytes: 0,
        sha256: sha2::Sha256::default(),
        file_name: file_name.chars().take(255).collect(),
        caller,
        limit: state.settings.max_upload_bytes,
        state,
        finished: false,
        trained: false,
    };
    // A delete of the model can move the model directory away between the
    // creation of the model directory and of the staging directory in it.
    let created = tokio::fs::create_dir_all(&upload.staging).await;
    created.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ApiError::Conflict(deleted_during_upload(model)),
        _ => ApiError::Internal(format!("cannot create the staging directory: {e}")),
    })?;
    let file = tokio::fs::File::create(upload.staging.join(&upload.artifact_name))
        .await
        .map_err(|e| upload.staging_error("create the staging file", e))?;
    upload.file = Some(file);
    Ok(upload)
}

/// Publishes files made inside the server (a training job's `model.onnx` and
/// `training.json`) as the model's next version, through the same staging,
/// load check, locked rename and reload as an upload: the first file is the model
/// (its format read from its content), the others go beside it. Nothing is left
/// behind when it fails or the caller goes away before the rename.
pub async fn publish_files(
    state: Arc<ServerState>,
    model: &str,
    files: &[(String, Vec<u8>)],
    caller: Caller,
) -> Result<UploadOutcome, ApiError> {
    let Some(((name, bytes), rest)) = files.split_first() else {
        return Err(ApiError::Internal("no files to publish".into()));
    };
    let mut upload = begin_upload(state, model, None, name, caller).await?;
    upload.trained = true;
    upload.write(bytes).await?;
    for (name, bytes) in rest {
        let name = staging_file_name(name);
        tokio::fs::write(upload.staging.join(&name), bytes)
            .await
            .map_err(|e| upload.staging_error(&format!("write the staging file {name}"), e))?;
        upload.assets.push(name);
    }
    upload.finish().await
}

fn version_exists(model: &str, version: u64) -> ApiError {
    ApiError::Conflict(format!(
        "model {model:?} already has a version {version}; upload a new version number"
    ))
}

/// A delete of the model while its upload streamed moved the model's folder, and
/// this upload's staging directory with it, out of the repository: the delete won.
fn deleted_during_upload(model: &str) -> String {
    format!(
        "model {model:?} was deleted while this upload was in progress; nothing was \
         stored: upload it again"
    )
}

impl Upload {
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether the staging directory is still there: a delete of the model takes it
    /// away with the model's folder (the error says so).
    fn still_staged(&self) -> Result<(), String> {
        if self.staging.is_dir() {
            Ok(())
        } else {
            Err(deleted_during_upload(&self.model))
        }
    }

    /// The error for a failed operation on the staging directory: 409 when the
    /// directory is gone because the model was deleted meanwhile, else 500.
    fn staging_error(&self, what: &str, e: std::io::Error) -> ApiError {
        match self.still_staged() {
            Ok(()) => ApiError::Internal(format!("cannot {what}: {e}")),
            Err(deleted) => ApiError::Conflict(deleted),
        }
    }

    /// Appends a chunk of the file; over the size limit is 413.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        self.written += chunk.len() as u64;
        if self.written > self.limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "the model file is larger than the upload limit of {} bytes",
                self.limit
            )));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| ApiError::Internal("upload already finished".into()))?;
        sha2::Digest::update(&mut self.sha256, chunk);
        let written = file.write_all(chunk).await;
        written.map_err(|e| self.staging_error("write the staging file", e))
    }

    /// Starts a file the version needs beside the model (a labels file, a
    /// `tokenizer.json`, a jieba dictionary), stored under its own name (the last
    /// component of a path); written by [`Upload::write_asset`], checked with the
    /// model by [`Upload::finish`]. A name is never rewritten: one with other
    /// characters than [`is_file_name_char`]'s, or longer than
    /// [`MAX_ASSET_NAME_CHARS`], is refused ([`asset_name_problem`]). So are names
    /// that the version directory cannot hold beside the model: hidden ones,
    /// `config.toml` (the model's, one level up), the model file's own, and a name
    /// given twice.
    pub async fn begin_asset(&mut self, file_name: &str) -> Result<(), ApiError> {
        self.close_asset().await?;
        if self.assets.len() >= MAX_UPLOAD_ASSETS {
            return Err(ApiError::PayloadTooLarge(format!(
                "an upload carries at most {MAX_UPLOAD_ASSETS} asset files beside its model"
            )));
        }
        if file_name.is_empty() {
            return Err(ApiError::InvalidArgument(
                "an asset part needs a file name (filename in its Content-Disposition): \
                 the asset is stored under it"
                    .into(),
            ));
        }
        let name = last_path_component(file_name).to_string();
        let refuse = |why: &str| {
            Err(ApiError::InvalidArgument(format!(
                "asset file {file_name:?} {why}"
            )))
        };
        if let Some(problem) = asset_name_problem(&name) {
            return refuse(&problem);
        }
        if name.is_empty() || name.starts_with('.') {
            return refuse("needs a file name that does not start with '.'");
        }
        if name == "config.toml" {
            return refuse(
                "cannot be config.toml: a model's config.toml sits beside its versions, not in one",
            );
        }
        if name == crate::jobs::train::TRAINING_FILE {
            return refuse(
                "cannot be training.json: only a training job writes it (it marks a model \
                 that training may replace)",
            );
        }
        if name == self.artifact_name || self.assets.contains(&name) {
            return refuse("has the name of another file of the upload");
        }
        let file = tokio::fs::File::create(self.staging.join(&name))
            .await
            .map_err(|e| self.staging_error("create the staging file", e))?;
        self.asset_file = Some(file);
        self.assets.push(name);
        Ok(())
    }

    /// Appends a chunk of the asset begun last; the model and its assets together
    /// are bounded by the upload limit (413).
    pub async fn write_asset(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        self.asset_bytes += chunk.len() as u64;
        if self.written + self.asset_bytes > self.limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "the model file and its assets are larger than the upload limit of {} bytes",
                self.limit
            )));
        }
        let file = self
            .asset_file
            .as_mut()
            .ok_or_else(|| ApiError::Internal("no asset begun".into()))?;
        let written = file.write_all(chunk).await;
        written.map_err(|e| self.staging_error("write the staging file", e))
    }

    async fn close_asset(&mut self) -> Result<(), ApiError> {
        if let Some(mut file) = self.asset_file.take() {
            let synced = file.flush().await.and(file.sync_all().await);
            synced.map_err(|e| self.staging_error("write the staging file", e))?;
        }
        Ok(())
    }

    /// Checks the file by loading it, then, under the model's lock, moves it into
    /// place and reloads the model. Bounded by the management timeout from here on;
    /// if the caller leaves before the move, nothing moves.
    pub async fn finish(mut self) -> Result<UploadOutcome, ApiError> {
        let deadline = deadline(&self.state);
        let mut file = self
            .file
            .take()
            .ok_or_else(|| ApiError::Internal("upload already finished".into()))?;
        let synced = file.flush().await.and(file.sync_all().await);
        synced.map_err(|e| self.staging_error("write the staging file", e))?;
        drop(file);
        self.close_asset().await?;
        if self.written == 0 {
            return Err(ApiError::InvalidArgument("the model file is empty".into()));
        }
        // The files stay writable through their open descriptors when a delete of
        // the model moves the staging directory away; what follows reads by path.
        self.still_staged().map_err(ApiError::Conflict)?;
        // Checked by actually loading it, on a blocking thread, before anything moves
        // and without the lock.
        // Stored under the canonical name of the format its content shows
        // (`lr_iris.model` holding a pickle becomes `model.pkl`), so the version
        // directory reads the same as any other; else under its own name.
        let mut artifact = self.staging.join(&self.artifact_name);
        let sniffed = tokio::task::spawn_blocking({
            let artifact = artifact.clone();
            move || crate::backends::format::sniff_file(&artifact)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("model check failed: {e}")))?
        .map_err(|e| self.staging_error("read the staging file", e))?;
        // Content the sniffer does not know is taken at its extension's word
        // (`iris.onnx`), as the repository would load it.
        let sniffed = sniffed.or_else(|| {
            crate::backends::format::ArtifactFormat::from_extension(Path::new(&self.artifact_name))
        });
        if let Some(format) = sniffed {
            // A known extension that agrees with the content keeps its name
            // (`iris.joblib` holding a plain pickle stays `model.joblib`).
            let by_extension = Path::new(&self.artifact_name)
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .and_then(|ext| {
                    crate::backends::ARTIFACT_NAMES
                        .into_iter()
                        .find(|known| known.strip_prefix("model.") == Some(ext.as_str()))
                })
                .filter(|known| {
                    crate::backends::format::ArtifactFormat::from_extension(Path::new(known))
                        .is_some_and(|f| f.backend() == format.backend())
                });
            let canonical = self
                .staging
                .join(by_extension.unwrap_or(format.canonical_name()));
            if canonical != artifact {
                if let Some(clash) = self
                    .assets
                    .iter()
                    .find(|a| self.staging.join(a) == canonical)
                {
                    return Err(ApiError::InvalidArgument(format!(
                        "asset file {clash:?} has the name the model file is stored under"
                    )));
                }
                let renamed = tokio::fs::rename(&artifact, &canonical).await;
                renamed.map_err(|e| self.staging_error("rename the staging file", e))?;
                artifact = canonical;
            }
        }
        // The repository must find this same file the model's: an asset named as a
        // model file it prefers (`saved_model.pb`, `model.onnx` beside a pickle)
        // would be loaded instead.
        let found = tokio::task::spawn_blocking({
            let staging = self.staging.clone();
            move || crate::backends::find_artifact(&staging)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("model check failed: {e}")))?;
        if found.as_deref() != Some(artifact.as_path()) {
            // A delete of the model may have moved the staging directory away.
            self.still_staged().map_err(ApiError::Conflict)?;
            return Err(ApiError::InvalidArgument(
                match found.as_deref().and_then(Path::file_name) {
                    Some(taken) => format!(
                        "asset file {:?} would be taken for the version's model instead of \
                         the uploaded model file: give it another name",
                        taken.to_string_lossy()
                    ),
                    None => format!(
                        "the model file's name ({:?}) is not one the repository knows a \
                         model by when other files sit beside it: name it {}",
                        self.artifact_name,
                        crate::backends::ARTIFACT_NAMES.join(", ")
                    ),
                },
            ));
        }
        // What the version directory holds once moved into place, for the answer.
        let files: Vec<String> = artifact
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .into_iter()
            .chain(self.assets.iter().cloned())
            .collect();
        let manager = self.state.manager.clone();
        let options = manager.backend_options().clone();
        // The model's own config.toml (if any) says how its pickles are read (a
        // fastText model's segmenter, a SavedModel's tags), and what its pre- and
        // post-processing pipeline needs: that is built too, from the files of the
        // upload, so a labels file, tokenizer or image setting that does not fit
        // the model is refused here rather than stored as a version that fails;
        // so is a warm-up (`warmup.json`, TF Serving's warm-up records) that fails.
        // A config.toml that does not parse says nothing of how the upload would be
        // served: it is checked against nothing, so it is refused (it was checked
        // against the defaults, and stored).
        let config = crate::model_config::ModelConfig::load(&self.model_dir).map_err(|e| {
            ApiError::Conflict(format!(
                "model {:?}: {e}; fix it before uploading a version (nothing was stored)",
                self.model
            ))
        })?;
        let version_dir = self.staging.clone();
        let model = self.model.clone();
        let check = tokio::task::spawn_blocking(move || {
            let backend = load_backend_with(&artifact, &options, &config).map_err(|e| {
                format!("the uploaded file is not a model ferroserve can load: {e}")
            })?;
            crate::preprocess::Pipeline::load(&version_dir, &config, &*backend).map_err(|e| {
                format!("the uploaded model does not fit the model's config.toml: {e}")
            })?;
            if config.warmup_enabled() {
                let limit = manager.warm_up_limit(&config);
                crate::warmup::warm_up(&model, 0, &*backend, &version_dir, limit)
                    .map_err(|e| format!("the uploaded model's warm-up failed: {e}"))?;
            }
            Ok(())
        });
        let checked = tokio::time::timeout_at(deadline, check)
            .await
            .map_err(|_| {
                ApiError::DeadlineExceeded(
                    "checking the uploaded model did not finish within the management timeout"
                        .into(),
                )
            })?
            .map_err(|e| ApiError::Internal(format!("model check failed: {e}")))?;
        if let Err(e) = checked {
            self.still_staged().map_err(ApiError::Conflict)?;
            return Err(ApiError::InvalidArgument(e));
        }
        let state = self.state.clone();
        let model = self.model.clone();
        let bytes = self.written;
        let caller = self.caller.clone();
        let detail = serde_json::json!({
            "bytes": bytes,
            "sha256": hex(&sha2::Digest::finalize(self.sha256.clone())),
            "file_name": self.file_name,
            "assets": self.assets,
        });
        let lock = state.sources.lock_model(&model, deadline).await?;
        // The upload itself moves to the blocking thread: if that never runs its
        // effect (the caller left), dropping it there removes the staging directory.
        let (version, summary) = run_locked(deadline, "the upload", move |_| {
            // The config list may have changed while the file streamed in.
            self.state.sources.check_uploadable(&self.model)?;
            let version = self.move_into_place()?;
            // Recorded with the move, whatever the caller does next.
            audit(
                &self.state,
                &caller,
                EventKind::Upload,
                &self.model,
                Some(version),
                detail,
            );
            let sources = &self.state.sources;
            // A stopped model stays stopped (as the store keeps it) until it is
            // reloaded, loaded or deployed.
            if sources.is_source(&self.model) && !sources.is_stopped(&self.model) {
                sources.reload_model_locked(&self.model, &lock)?;
            }
            // The model as this upload left it: a delete right after must not turn
            // the stored upload into a 404.
            Ok((version, summary_under_lock(&self.state, &self.model)))
        })
        .await?;
        let summary = summary?;
        Ok(UploadOutcome {
            model,
            version,
            bytes,
            files,
            summary,
        })
    }

    /// Renames the staging directory to `<version>/`. The caller holds the model's
    /// lock, so the version number cannot be taken meanwhile. Blocking.
    fn move_into_place(&mut self) -> Result<u64, SourcesError> {
        // Under the lock, so a delete cannot move the model away between this look
        // and the rename.
        self.still_staged().map_err(SourcesError::Conflict)?;
        if self.trained {
            if let Some(why) = crate::jobs::train::foreign_model(&self.model, &self.model_dir) {
                return Err(SourcesError::Conflict(why));
            }
        }
        let version = match self.version {
            Some(v) => v,
            None => next_version(&self.model_dir)?,
        };
        let target = self.model_dir.join(version.to_string());
        // However written: `0005/` is version 5 too.
        if target.exists() || crate::repository::has_version_dir(&self.model_dir, version) {
            return Err(SourcesError::Conflict(
                version_exists(&self.model, version).to_string(),
            ));
        }
        // The one step that makes the version visible: a rename within one directory.
        std::fs::rename(&self.staging, &target).map_err(|e| {
            tracing::error!(path = %target.display(), error = %e, "cannot move the upload into place");
            SourcesError::Io(format!(
                "cannot move the upload into version directory {version}: {e}"
            ))
        })?;
        self.finished = true;
        self.state.sources.staging_ended(&self.staging);
        if let Ok(dir) = std::fs::File::open(&self.model_dir) {
            let _ = dir.sync_all();
        }
        tracing::info!(model = %self.model, version, bytes = self.written, "model uploaded");
        Ok(version)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.staging) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {e}", self.staging.display());
            }
        }
        self.state.sources.staging_ended(&self.staging);
        if self.created_model_dir {
            let _ = std::fs::remove_dir(&self.model_dir); // only if still empty
        }
    }
}

/// One more than the highest version directory of the model (1 for a new model).
fn next_version(model_dir: &Path) -> Result<u64, SourcesError> {
    let highest = std::fs::read_dir(model_dir)
        .map_err(|e| {
            tracing::error!(path = %model_dir.display(), error = %e, "cannot list versions");
            SourcesError::Io(format!("cannot list the model's versions: {e}"))
        })?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(crate::repository::version_of_dir)
        })
        .max()
        .unwrap_or(0);
    highest
        .checked_add(1)
        .filter(|v| *v <= MAX_VERSION)
        .ok_or_else(|| SourcesError::Conflict("no version number left".into()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
