//! Files uploaded with a job (`multipart/form-data` on `POST /v1/jobs`).
//!
//! An upload is received into a staging directory `<uploads>/.incoming-<random>/`,
//! one file per part, named by the part. When the spec has been checked, the
//! directory is renamed to `<uploads>/<job id>/` and the job's spec refers to the
//! files by part name (`{"upload": "<part>"}`). The directory goes when the job
//! ends; staging directories go when dropped. Whatever a crash leaves is removed at
//! the next start and by the retention sweep.
//!
//! Invariant: uploads live under the state directory, never in the data directory,
//! so a job's sink or another job's spec cannot name them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;

use super::spec::{is_upload_name, FileFormat};
use crate::store::Store;

/// The uploads directory's name under the state directory.
pub const UPLOADS_DIR: &str = "job-uploads";
const INCOMING_PREFIX: &str = ".incoming-";

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UploadError {
    /// The parts together are larger than the limit (413).
    #[error("the uploaded files are larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// A bad part name, a part sent twice (400).
    #[error("{0}")]
    Invalid(String),
    /// The disk (503).
    #[error("cannot store the upload: {0}")]
    Io(String),
}

/// A part saved to the staging directory.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadedFile {
    /// The part's name, which is also the file's name in the directory.
    pub part: String,
    /// The file name the client gave (for the format), if any.
    pub file_name: Option<String>,
    pub bytes: u64,
}

impl UploadedFile {
    /// The format its file name (or, failing that, its part name) names.
    pub fn format(&self) -> Option<FileFormat> {
        self.file_name
            .as_deref()
            .and_then(FileFormat::from_extension)
            .or_else(|| FileFormat::from_extension(&self.part))
    }
}

/// Uploaded files in a staging directory, removed on drop unless moved to a job
/// with [`StagedUploads::persist`].
#[derive(Debug)]
pub struct StagedUploads {
    root: PathBuf,
    dir: PathBuf,
    files: Vec<UploadedFile>,
    limit: u64,
    total: u64,
    /// The part being written.
    current: Option<tokio::fs::File>,
    kept: bool,
}

impl StagedUploads {
    /// A new, empty staging directory under `root` (the uploads directory); the
    /// parts together may hold at most `limit` bytes.
    pub async fn new(root: &Path, limit: u64) -> Result<StagedUploads, UploadError> {
        let dir = root.join(format!("{INCOMING_PREFIX}{}", super::new_job_id()));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| UploadError::Io(e.kind().to_string()))?;
        Ok(StagedUploads {
            root: root.to_path_buf(),
            dir,
            files: Vec::new(),
            limit,
            total: 0,
            current: None,
            kept: false,
        })
    }

    /// Where the files are while staged.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn files(&self) -> &[UploadedFile] {
        &self.files
    }

    pub fn file(&self, part: &str) -> Option<&UploadedFile> {
        self.files.iter().find(|f| f.part == part)
    }

    /// Starts saving part `part`; then [`Self::write`] its bytes.
    pub async fn begin(&mut self, part: &str, file_name: Option<&str>) -> Result<(), UploadError> {
        if !is_upload_name(part) {
            return Err(UploadError::Invalid(format!(
                "part name {part:?}: a file part's name is 1 to 64 letters, digits, '_', '-' \
                 or '.' (not starting with '.')"
            )));
        }
        if self.file(part).is_some() {
            return Err(UploadError::Invalid(format!("part {part:?} is sent twice")));
        }
        self.finish_part().await?;
        let file = tokio::fs::File::create(self.dir.join(part))
            .await
            .map_err(|e| UploadError::Io(e.kind().to_string()))?;
        self.current = Some(file);
        self.files.push(UploadedFile {
            part: part.to_string(),
            file_name: file_name.filter(|n| !n.is_empty()).map(str::to_string),
            bytes: 0,
        });
        Ok(())
    }

    /// Appends to the part begun last; past the limit, [`UploadError::TooLarge`].
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        self.total += chunk.len() as u64;
        if self.total > self.limit {
            self.current = None;
            return Err(UploadError::TooLarge(self.limit));
        }
        let (Some(file), Some(entry)) = (self.current.as_mut(), self.files.last_mut()) else {
            return Err(UploadError::Invalid("no part begun".into()));
        };
        entry.bytes += chunk.len() as u64;
        file.write_all(chunk)
            .await
            .map_err(|e| UploadError::Io(e.kind().to_string()))
    }

    async fn finish_part(&mut self) -> Result<(), UploadError> {
        if let Some(mut file) = self.current.take() {
            file.flush()
                .await
                .map_err(|e| UploadError::Io(e.kind().to_string()))?;
        }
        Ok(())
    }

    /// Moves the files to the job's directory `<uploads>/<job_id>/`.
    pub async fn persist(mut self, job_id: &str) -> Result<PathBuf, UploadError> {
        self.finish_part().await?;
        let target = self.root.join(job_id);
        tokio::fs::rename(&self.dir, &target)
            .await
            .map_err(|e| UploadError::Io(e.kind().to_string()))?;
        self.kept = true;
        Ok(target)
    }
}

impl Drop for StagedUploads {
    fn drop(&mut self) {
        self.current = None;
        if !self.kept {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes a job's uploaded files, if it has any.
pub fn remove_job_dir(root: &Path, job_id: &str) {
    let dir = root.join(job_id);
    if dir.is_dir() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(job = job_id, "cannot remove the job's uploaded files: {e}");
        }
    }
}

/// Removes what no job needs: directories of jobs that are not queued or running,
/// and staging directories and directories of unknown jobs: all of them at start
/// (`min_age` `None`, before any request), else those older than `min_age` (a
/// request still receiving one is younger, and so is a job's directory moved into
/// place just before its record is written).
pub async fn remove_leftovers(root: &Path, store: &Store, min_age: Option<Duration>) {
    let Ok(mut entries) = tokio::fs::read_dir(root).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().to_string();
        let old_enough = || async {
            match min_age {
                None => true,
                Some(age) => entry
                    .metadata()
                    .await
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|elapsed| elapsed > age),
            }
        };
        let stale = if name.starts_with(INCOMING_PREFIX) {
            old_enough().await
        } else {
            match store.job(&name).await {
                Ok(Some(row)) => !matches!(row.state.as_str(), "queued" | "running"),
                Ok(None) => old_enough().await,
                // The store is away: keep it for the next sweep.
                Err(_) => false,
            }
        };
        if stale {
            tracing::info!(entry = %name, "removing leftover job uploads");
            let _ = tokio::fs::remove_dir_all(entry.path()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::remove_leftovers;
    use crate::store::Store;

    #[tokio::test]
    async fn the_sweep_keeps_a_young_directory_of_a_job_not_yet_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url, Duration::from_secs(5), true)
            .await
            .unwrap();
        let root = dir.path().join("uploads");
        let job = root.join("0123456789abcdef");
        std::fs::create_dir_all(&job).unwrap();
        std::fs::write(job.join("data.csv"), "a\n1\n").unwrap();
        // Moved into place just before its record is written: the sweep keeps it.
        remove_leftovers(&root, &store, Some(Duration::from_secs(3600))).await;
        assert!(job.join("data.csv").is_file());
        // Older than the sweep's age (here: any age), or at start, it goes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        remove_leftovers(&root, &store, Some(Duration::ZERO)).await;
        assert!(!job.exists());
        std::fs::create_dir_all(&job).unwrap();
        remove_leftovers(&root, &store, None).await;
        assert!(!job.exists());
    }
}
