//! The flat layout: a model file placed directly in the repository root
//! (`<root>/lr_iris.model`), served as the model named by its stem (`lr_iris`).
//!
//! The first service ferroserve replaces kept its models this way and replaced a
//! file to publish a new model. A flat file has no version of its own, so each
//! content it takes becomes a version directory in a managed directory under the
//! server's state directory, `<state dir>/flat/<model>/<n>/model.<ext>`, beside a
//! hidden `.blake3` holding the content's hash. That directory is an ordinary model
//! directory for the rest of the server (scan, watcher, manager, hot swap); this
//! module only reads the root and writes the managed copies.
//!
//! Invariants:
//! * a content becomes a version only once: a file whose bytes hash to the latest
//!   version's hash (a restart, a `touch`, the same file renamed in again) makes no
//!   new version, so version numbers survive restarts;
//! * a copy is taken whole or not at all: it is written to a hidden staging
//!   directory and renamed into place, and if the source file changed while it was
//!   copied (size, modification time, inode or change time), the copy is dropped
//!   and taken again on a later poll, so a torn file is never a version;
//! * version numbers only grow: the next one is one more than the highest present,
//!   and pruning ([`prune`]) never removes the highest.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::backends::format::ArtifactFormat;
use crate::repository::parse_version;

/// The managed directory's name under the state directory.
pub const MANAGED_DIR_NAME: &str = "flat";
/// The hidden file in each managed version that holds its content's BLAKE3 hash.
const HASH_FILE: &str = ".blake3";
/// Staging directories of copies in progress, inside a model's managed directory.
const STAGING_PREFIX: &str = ".tmp-flat-";
/// How many versions of a flat model stay on disk: the newest few, so that status
/// shows what was served before and a managed directory stays bounded however
/// often its file is replaced.
pub const VERSIONS_KEPT: usize = 4;

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What tells two looks at a file apart: a file renamed over has a new inode, one
/// rewritten in place a new modification and change time (and usually size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub len: u64,
    pub modified: Option<SystemTime>,
    pub inode: u64,
    pub changed_ns: i128,
}

impl FileStat {
    pub fn of(meta: &std::fs::Metadata) -> FileStat {
        #[cfg(unix)]
        let (inode, changed_ns) = {
            use std::os::unix::fs::MetadataExt;
            (
                meta.ino(),
                i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            )
        };
        #[cfg(not(unix))]
        let (inode, changed_ns) = (0, 0);
        FileStat {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
            changed_ns,
        }
    }
}

/// A regular file directly in the repository root that may be a flat model.
#[derive(Debug, Clone, PartialEq)]
pub struct RootFile {
    pub file_name: String,
    pub path: PathBuf,
    pub stat: FileStat,
}

/// Names that are never flat models: hidden files (`.DS_Store`, `.lr_iris.model.tmp`)
/// and the names editors, downloaders and copy tools give a file still being
/// written (`*.tmp`, `*.part`, `*~`, …), so that writing a temporary file and
/// renaming it over the model never serves the temporary one.
pub fn is_ignored_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.ends_with('~')
        || [".tmp", ".temp", ".part", ".partial", ".crdownload", ".swp"]
            .iter()
            .any(|suffix| lower.ends_with(suffix))
}

/// The model a flat file serves: its name without the last extension
/// (`lr_iris.model` → `lr_iris`), or the whole name when it has none.
pub fn model_name(file_name: &str) -> &str {
    match file_name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => file_name,
    }
}

/// The regular files (symbolic links followed) directly in `root` whose names are
/// UTF-8 and not ignored ([`is_ignored_name`]).
pub fn root_files(root: &Path) -> std::io::Result<Vec<RootFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        if is_ignored_name(&file_name) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // gone since the listing, or a dangling link
        };
        if meta.is_file() {
            out.push(RootFile {
                file_name,
                stat: FileStat::of(&meta),
                path,
            });
        }
    }
    Ok(out)
}

/// Whether a settled file looks whole: a plain pickle ends with the STOP opcode
/// (`.`), so one cut off while it was written (a writer that paused longer than a
/// poll) is left alone until it does. Other formats are checked by their loader:
/// a torn one fails to load and the version before keeps serving.
pub fn looks_complete(path: &Path, format: ArtifactFormat) -> std::io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    match format {
        ArtifactFormat::Pickle => {
            let mut file = crate::regular_file::open(path)?;
            if file.metadata()?.len() == 0 {
                return Ok(false);
            }
            file.seek(SeekFrom::End(-1))?;
            let mut last = [0u8; 1];
            file.read_exact(&mut last)?;
            Ok(last[0] == b'.')
        }
        ArtifactFormat::Onnx | ArtifactFormat::CompressedJoblib | ArtifactFormat::FastText => {
            Ok(true)
        }
    }
}

/// What [`materialise`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Materialised {
    /// The content became this new version.
    New(u64),
    /// The content is the latest version's already.
    Unchanged(u64),
    /// The file changed while it was copied: nothing was kept; try again later.
    Unsettled,
}

/// The versions in a managed model directory.
pub fn versions(managed: &Path) -> BTreeSet<u64> {
    let Ok(entries) = std::fs::read_dir(managed) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(parse_version))
        .collect()
}

/// Copies `source` (seen as `expected`) into the managed directory `managed` as the
/// next version, unless its content is the latest version's. Blocking; the caller
/// holds the model's lock.
pub fn materialise(
    source: &Path,
    expected: FileStat,
    format: ArtifactFormat,
    managed: &Path,
) -> std::io::Result<Materialised> {
    std::fs::create_dir_all(managed)?;
    remove_staging(managed);
    let latest = versions(managed).last().copied();
    let latest_hash = latest.and_then(|v| {
        std::fs::read_to_string(managed.join(v.to_string()).join(HASH_FILE))
            .ok()
            .map(|s| s.trim().to_string())
    });
    let staging = managed.join(format!(
        "{STAGING_PREFIX}{}-{}",
        std::process::id(),
        STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&staging)?;
    let copied = copy_hashing(source, &staging.join(format.canonical_name()));
    let outcome = (|| {
        let hash = copied?;
        let after = FileStat::of(&std::fs::metadata(source)?);
        if after != expected {
            return Ok(Materialised::Unsettled);
        }
        if let (Some(v), Some(h)) = (latest, &latest_hash) {
            if *h == hash {
                return Ok(Materialised::Unchanged(v));
            }
        }
        let version = latest.map_or(1, |v| v + 1);
        std::fs::write(staging.join(HASH_FILE), format!("{hash}\n"))?;
        std::fs::rename(&staging, managed.join(version.to_string()))?;
        Ok(Materialised::New(version))
    })();
    if !matches!(outcome, Ok(Materialised::New(_))) {
        let _ = std::fs::remove_dir_all(&staging);
    }
    outcome
}

/// Copies a file, synced to disk, and answers the BLAKE3 hash of what was copied.
fn copy_hashing(from: &Path, to: &Path) -> std::io::Result<String> {
    let mut reader = crate::regular_file::open(from)?;
    let mut writer = std::fs::File::create(to)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
    }
    writer.sync_all()?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Removes staging a crash or a failed copy left in a managed model directory. The
/// caller holds the model's lock, so no copy of this process is in progress there.
fn remove_staging(managed: &Path) {
    let Ok(entries) = std::fs::read_dir(managed) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGING_PREFIX)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes all but the newest `keep` versions of a managed model directory, never
/// one in `serving`. Blocking; the caller holds the model's lock.
pub fn prune(managed: &Path, keep: usize, serving: &BTreeSet<u64>) {
    let all = versions(managed);
    let old = all.len().saturating_sub(keep.max(1));
    for v in all.into_iter().take(old) {
        if serving.contains(&v) {
            continue;
        }
        if let Err(e) = std::fs::remove_dir_all(managed.join(v.to_string())) {
            tracing::warn!(path = %managed.display(), version = v, "cannot remove an old flat version: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(path: &Path) -> FileStat {
        FileStat::of(&std::fs::metadata(path).unwrap())
    }

    #[test]
    fn names() {
        assert_eq!(model_name("lr_iris.model"), "lr_iris");
        assert_eq!(model_name("lr_iris.model.bak"), "lr_iris.model");
        assert_eq!(model_name("bare"), "bare");
        for ignored in [
            ".DS_Store",
            ".x.model",
            "x.model.tmp",
            "x.PART",
            "x.model~",
            "a.swp",
        ] {
            assert!(is_ignored_name(ignored), "{ignored}");
        }
        assert!(!is_ignored_name("lr_iris.model"));
    }

    #[test]
    fn the_same_content_is_one_version_and_a_new_one_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("m.model");
        let managed = dir.path().join("state/flat/m");
        std::fs::write(&source, b"first").unwrap();
        let f = ArtifactFormat::Pickle;
        let first = materialise(&source, stat(&source), f, &managed).unwrap();
        assert_eq!(first, Materialised::New(1));
        assert_eq!(
            std::fs::read(managed.join("1/model.pkl")).unwrap(),
            b"first"
        );
        // Same bytes again (a restart, or the file renamed in again): no new version.
        std::fs::write(&source, b"first").unwrap();
        assert_eq!(
            materialise(&source, stat(&source), f, &managed).unwrap(),
            Materialised::Unchanged(1)
        );
        std::fs::write(&source, b"second").unwrap();
        assert_eq!(
            materialise(&source, stat(&source), f, &managed).unwrap(),
            Materialised::New(2)
        );
        // Back to the first bytes: the next version, not version 1 again.
        std::fs::write(&source, b"first").unwrap();
        assert_eq!(
            materialise(&source, stat(&source), f, &managed).unwrap(),
            Materialised::New(3)
        );
        assert_eq!(versions(&managed), BTreeSet::from([1, 2, 3]));
    }

    #[test]
    fn a_file_that_changed_since_it_was_seen_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("m.model");
        let managed = dir.path().join("flat/m");
        std::fs::write(&source, b"half").unwrap();
        let seen = stat(&source);
        std::fs::write(&source, b"half and the rest").unwrap();
        let got = materialise(&source, seen, ArtifactFormat::Pickle, &managed).unwrap();
        assert_eq!(got, Materialised::Unsettled);
        assert!(versions(&managed).is_empty());
        let leftovers: Vec<_> = std::fs::read_dir(&managed).unwrap().collect();
        assert!(leftovers.is_empty(), "no staging left behind");
    }

    #[test]
    fn a_pickle_cut_short_does_not_look_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.model");
        std::fs::write(&path, b"\x80\x04K\x01.").unwrap();
        assert!(looks_complete(&path, ArtifactFormat::Pickle).unwrap());
        std::fs::write(&path, b"\x80\x04K\x01").unwrap();
        assert!(!looks_complete(&path, ArtifactFormat::Pickle).unwrap());
    }

    #[test]
    fn prune_keeps_the_newest_and_what_is_served() {
        let dir = tempfile::tempdir().unwrap();
        for v in 1..=6 {
            std::fs::create_dir_all(dir.path().join(v.to_string())).unwrap();
        }
        prune(dir.path(), 3, &BTreeSet::from([1]));
        assert_eq!(versions(dir.path()), BTreeSet::from([1, 4, 5, 6]));
    }
}
