//! Finds models and versions on disk: `<root>/<model>/<version>/<artifact>`.
//!
//! Invariant: this module only reads the file system; it decides nothing about
//! serving. `sources` lists and scans models; the manager turns a [`ModelOnDisk`] into
//! loads and unloads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::backends::find_artifact;
use crate::model_config::{ModelConfig, ModelConfigError};

/// One version directory found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionOnDisk {
    pub version: u64,
    pub dir: PathBuf,
    /// The model file, or `None` when the directory holds no known artifact.
    pub artifact: Option<PathBuf>,
    /// The identity of the version's files now ([`version_files`]), read only for an
    /// explicit reload of versions that serve, so that a version whose files were
    /// replaced in place is loaded again; `None` otherwise (the watcher never
    /// reloads a served version for its files; only when another directory comes
    /// to name it).
    pub files: Option<VersionFiles>,
    /// When there is no artifact: the files that could each be the model (several,
    /// none with a known name), for the version's error.
    pub candidates: Vec<String>,
}

/// What identifies the files of a version directory: each file's path inside it,
/// size, modification time and inode (0 where there are none), sorted. A file
/// replaced in place (`mv` over it, or written anew) changes at least one of them.
pub type VersionFiles = Vec<(String, u64, Option<std::time::SystemTime>, u64)>;

/// Deepest directory level and most files [`version_files`] looks at.
const MAX_IDENTITY_DEPTH: usize = 4;
const MAX_IDENTITY_FILES: usize = 10_000;

/// Reads the identity of the files under a version directory (see [`VersionFiles`]).
/// Unreadable parts read as absent.
pub fn version_files(dir: &Path) -> VersionFiles {
    let mut out = Vec::new();
    walk_entries(dir, MAX_IDENTITY_DEPTH, &mut |name, meta| {
        if meta.is_dir() {
            return true;
        }
        if out.len() >= MAX_IDENTITY_FILES {
            return false;
        }
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        out.push((name.to_string(), meta.len(), meta.modified().ok(), inode));
        true
    });
    out.sort();
    out
}

/// Walks the entries under `dir`, down to `max_depth` directory levels below it,
/// calling `visit` with each one's path inside `dir` and its metadata (a directory
/// after what it holds, its path ending in `/`) until `visit` answers `false`.
/// Unreadable entries are skipped. Shared by [`version_files`] and the watcher's
/// fingerprints (`sources::watch`).
pub fn walk_entries(
    dir: &Path,
    max_depth: usize,
    visit: &mut dyn FnMut(&str, &std::fs::Metadata) -> bool,
) {
    fn walk(
        dir: &Path,
        prefix: &str,
        depth: usize,
        max_depth: usize,
        visit: &mut dyn FnMut(&str, &std::fs::Metadata) -> bool,
    ) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return true;
        };
        for entry in entries.flatten() {
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                let name = format!("{name}/");
                if depth < max_depth && !walk(&entry.path(), &name, depth + 1, max_depth, visit) {
                    return false;
                }
                if !visit(&name, &meta) {
                    return false;
                }
            } else if !visit(&name, &meta) {
                return false;
            }
        }
        true
    }
    walk(dir, "", 0, max_depth, visit);
}

/// One model directory found on disk.
#[derive(Debug)]
pub struct ModelOnDisk {
    pub name: String,
    pub dir: PathBuf,
    /// The model's `config.toml`, or why it could not be used.
    pub config: Result<ModelConfig, ModelConfigError>,
    /// Versions by number.
    pub versions: BTreeMap<u64, VersionOnDisk>,
    /// Every version number a directory names now, whether or not `versions` still
    /// holds it (the watcher leaves out versions whose files are still changing):
    /// a version that is not here has left the disk.
    pub present: BTreeSet<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read model repository {path}: {source}")]
pub struct RepositoryError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Whether a directory entry is hidden or a staging area (`.tmp-*`, `.git`, …).
fn is_ignored(name: &str) -> bool {
    name.starts_with('.')
}

/// The highest version number: 2^53 − 1, the largest integer that every JSON
/// reader (JavaScript's included) keeps exactly, and far from `u64::MAX`, so that
/// "one more than the highest version" always exists for automatic numbering.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// A version number as written in a directory name or an upload: ASCII decimal
/// digits only, without sign, spaces or leading zeros (so `1` and `01` can never
/// both name version 1), from 1 to [`MAX_VERSION`].
pub fn parse_version(name: &str) -> Option<u64> {
    if name.is_empty() || name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|v| *v <= MAX_VERSION)
}

/// A version directory's number, as TF Serving reads one (`00000123`, the directory
/// of its own test models, is version 123): ASCII decimal digits, leading zeros
/// allowed, from 1 to [`MAX_VERSION`]. Where two directories name one version
/// (`123` and `0123`), [`prefer_version_dir`] chooses. Uploads and requests that
/// write a version use [`parse_version`], which has one spelling per number.
pub fn version_of_dir(name: &str) -> Option<u64> {
    parse_requested_version(name).filter(|v| *v <= MAX_VERSION)
}

/// Whether version directory `candidate` wins over `current` for one version: the
/// shorter name (the one with fewer leading zeros; `123` itself when it is there),
/// then the smaller, so the choice never depends on the order a listing gives.
pub fn prefer_version_dir(candidate: &str, current: &str) -> bool {
    (candidate.len(), candidate) < (current.len(), current)
}

/// Whether `model_dir` has a directory for version `version`, however written.
pub fn has_version_dir(model_dir: &Path, version: u64) -> bool {
    std::fs::read_dir(model_dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name().to_str().and_then(version_of_dir) == Some(version) && e.path().is_dir()
        })
    })
}

/// A version number as a request names it (a URL path, a V2 `model_version`):
/// ASCII decimal digits, leading zeros allowed as TF Serving's `\d+` allows them
/// (`01` is version 1), not 0, no sign or spaces. Every protocol reads it alike.
pub fn parse_requested_version(text: &str) -> Option<u64> {
    Some(text)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|v| *v > 0)
}

fn subdirectories(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not UTF-8: cannot be a model name or a version
        };
        if is_ignored(&name) || !entry.path().is_dir() {
            continue;
        }
        out.push((name, entry.path()));
    }
    Ok(out)
}

/// Scans one model directory.
pub fn scan_model(name: &str, dir: &Path) -> Result<ModelOnDisk, RepositoryError> {
    let err = |source| RepositoryError {
        path: dir.to_path_buf(),
        source,
    };
    let mut versions = BTreeMap::new();
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    for (version_name, version_dir) in subdirectories(dir).map_err(err)? {
        if let Some(version) = version_of_dir(&version_name) {
            if let Some(current) = names.get(&version) {
                let wins = prefer_version_dir(&version_name, current);
                let (kept, other) = match wins {
                    true => (version_name.as_str(), current.as_str()),
                    false => (current.as_str(), version_name.as_str()),
                };
                tracing::warn!(
                    model = name,
                    "directories {kept:?} and {other:?} both name version {version}: \
                     {kept:?} is the one served; remove or rename the other"
                );
                if !wins {
                    continue;
                }
            }
            names.insert(version, version_name.clone());
            let artifact = find_artifact(&version_dir);
            let candidates = match artifact {
                Some(_) => Vec::new(),
                None => crate::backends::artifact_candidates(&version_dir),
            };
            versions.insert(
                version,
                VersionOnDisk {
                    version,
                    artifact,
                    dir: version_dir,
                    files: None,
                    candidates,
                },
            );
        }
    }
    Ok(ModelOnDisk {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        config: ModelConfig::load(dir),
        present: versions.keys().copied().collect(),
        versions,
    })
}

/// The model directories under the repository root (not hidden, not staging), by
/// name. Names that are not UTF-8 are skipped: they cannot be asked for. A directory
/// that holds staging (`.tmp-*`) but no version directory and no `config.toml` is
/// not a model yet (an upload of a new model in progress, or debris): it is left out,
/// so status never shows an empty "ghost".
pub fn model_directories(root: &Path) -> Result<Vec<(String, PathBuf)>, RepositoryError> {
    let mut dirs = subdirectories(root).map_err(|source| RepositoryError {
        path: root.to_path_buf(),
        source,
    })?;
    dirs.retain(|(_, dir)| !holds_only_staging(dir));
    Ok(dirs)
}

/// Whether a directory holds staging and nothing that makes it a model. Stops at the
/// first version directory or config file, so a model with many versions costs one
/// directory entry or so.
pub fn holds_only_staging(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut staging = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name == ModelConfig::FILE_NAME || version_of_dir(name).is_some() {
            return false;
        }
        staging |= name.starts_with(".tmp-");
    }
    staging
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn empty_repository_has_no_models() {
        let dir = tempfile::tempdir().unwrap();
        assert!(model_directories(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn missing_repository_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = model_directories(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn finds_integer_versions_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for v in ["1", "2", "10"] {
            touch(&root.join("m").join(v).join("model.onnx"));
        }
        touch(&root.join("m/latest/model.onnx"));
        touch(&root.join("m/01/model.onnx"));
        touch(&root.join("m/-3/model.onnx"));
        touch(&root.join("m/.tmp-upload-4/model.onnx"));
        std::fs::create_dir_all(root.join("m/7")).unwrap(); // no artifact
        touch(&root.join(".hidden/1/model.onnx"));
        touch(&root.join("ghost/.tmp-upload-9/model.onnx")); // staging only: no model
        std::fs::create_dir_all(root.join("empty")).unwrap();
        touch(&root.join("README.md"));
        let models = model_directories(root).unwrap();
        let mut names: Vec<&str> = models.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            ["empty", "m"],
            "a directory of staging only is no model"
        );
        let m = scan_model("m", &root.join("m")).unwrap();
        assert_eq!(
            m.versions.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 7, 10]
        );
        assert!(m.versions[&7].artifact.is_none());
        assert_eq!(
            m.versions[&10].artifact.as_deref(),
            Some(root.join("m/10/model.onnx").as_path())
        );
        assert!(m.config.is_ok());
    }

    #[test]
    fn a_single_file_of_any_name_is_the_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("m/1/lr_iris.model"));
        touch(&root.join("m/1/warmup.json"));
        touch(&root.join("m/1/config.toml"));
        touch(&root.join("m/1/.DS_Store"));
        touch(&root.join("m/2/a.bin"));
        touch(&root.join("m/2/b.bin")); // two candidates: neither
        touch(&root.join("m/3/notes.txt"));
        touch(&root.join("m/3/model.pkl")); // a known name wins
        let m = scan_model("m", &root.join("m")).unwrap();
        assert_eq!(
            m.versions[&1].artifact.as_deref(),
            Some(root.join("m/1/lr_iris.model").as_path())
        );
        assert!(m.versions[&2].artifact.is_none());
        assert_eq!(
            m.versions[&3].artifact.as_deref(),
            Some(root.join("m/3/model.pkl").as_path())
        );
    }

    /// TF Serving's own test models live in `00000123/`: version 123, as there.
    /// Where two directories name one version, the shorter name serves, whatever
    /// order the listing gives.
    #[test]
    fn version_directories_may_have_leading_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("m/00000123/model.onnx"));
        touch(&root.join("m/7/model.onnx"));
        touch(&root.join("m/007/model.pkl"));
        touch(&root.join("m/0007/model.pkl"));
        touch(&root.join("m/0/model.onnx"));
        touch(&root.join("m/000/model.onnx"));
        let m = scan_model("m", &root.join("m")).unwrap();
        assert_eq!(m.versions.keys().copied().collect::<Vec<_>>(), vec![7, 123]);
        assert_eq!(m.versions[&123].dir, root.join("m/00000123"));
        assert_eq!(m.versions[&7].dir, root.join("m/7"));
        assert!(has_version_dir(&root.join("m"), 123));
        assert!(!has_version_dir(&root.join("m"), 12));
        assert!(prefer_version_dir("07", "007"));
        assert!(prefer_version_dir("007", "070") || !prefer_version_dir("070", "007"));
        assert_eq!(version_of_dir("0"), None);
        assert_eq!(version_of_dir("9007199254740992"), None);
        assert_eq!(version_of_dir("+1"), None);
        touch(&root.join("staged/.tmp-upload-1/model.onnx"));
        touch(&root.join("staged/0001/model.onnx"));
        assert!(!holds_only_staging(&root.join("staged")));
    }

    #[test]
    fn version_names() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("10"), Some(10));
        assert_eq!(parse_version("9007199254740991"), Some(MAX_VERSION));
        for bad in [
            "0",
            "01",
            "",
            "-1",
            "+1",
            "1.5",
            "v1",
            "99999999999999999999999",
            "18446744073709551615",
            "9007199254740992",
            " 7",
            "7 ",
            "٧", // ARABIC-INDIC DIGIT SEVEN
        ] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }
}
