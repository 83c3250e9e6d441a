//! What TensorFlow reads of a SavedModel directory, checked before it loads.

use std::path::{Path, PathBuf};

use super::SAVED_MODEL_FILE;

/// The entries of a version directory that are TensorFlow's to read when it loads a
/// SavedModel: the graph (`saved_model.pb`, else `saved_model.pbtxt`), its
/// fingerprint, and everything under `variables/` and `assets/`. (`assets.extra`
/// holds TF Serving's warm-up file, which the server reads itself as a regular file;
/// `config.toml` and `warmup.json` are the server's too.)
const SAVED_MODEL_FILES: [&str; 3] = [SAVED_MODEL_FILE, "saved_model.pbtxt", "fingerprint.pb"];
const SAVED_MODEL_DIRS: [&str; 2] = ["variables", "assets"];

/// The most entries [`check_regular_files`] looks at under `variables/` and
/// `assets/`: a SavedModel has a handful (one index, a few shards, some vocabulary
/// files), and the check must end on any tree.
pub const MAX_SAVED_MODEL_ENTRIES: usize = 10_000;

/// Refuses a SavedModel directory where TensorFlow would read something that is not
/// a regular file: a FIFO named `variables/variables.data-00000-of-00001` made
/// `TF_LoadSessionFromSavedModel` wait for a writer for ever, holding the version in
/// LOADING where it could be neither unloaded nor deleted, and a device such as
/// `/dev/zero` never ends. The error names the entry relative to `dir` and what it
/// is.
///
/// Links are followed, as TensorFlow (and the server's other readers) follow them,
/// into directories too (`variables` is often a link to shared storage); a
/// directory reached twice (a link loop) is walked once. An entry that cannot be
/// examined (a dangling link, no permission) is left to TensorFlow, which fails on
/// it at once rather than waiting. At most [`MAX_SAVED_MODEL_ENTRIES`] entries are
/// looked at; a tree with more is refused, so the check always ends.
pub fn check_regular_files(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let not_regular = |relative: &Path, kind: std::fs::FileType| {
        format!(
            "{}: it is {}, not a regular file",
            relative.display(),
            crate::file_kind::describe(kind)
        )
    };
    for name in SAVED_MODEL_FILES {
        match std::fs::metadata(dir.join(name)) {
            Ok(meta) if meta.is_file() => {}
            Ok(meta) if meta.is_dir() => {
                return Err(format!("{name}: it is a directory, not a regular file"))
            }
            Ok(meta) => return Err(not_regular(Path::new(name), meta.file_type())),
            Err(_) => {}
        }
    }
    let mut seen_dirs: std::collections::HashSet<(u64, u64)> = std::collections::HashSet::new();
    let mut pending: Vec<PathBuf> = Vec::new();
    let mut entries = 0usize;
    for name in SAVED_MODEL_DIRS {
        match std::fs::metadata(dir.join(name)) {
            Ok(meta) if meta.is_dir() => {
                if seen_dirs.insert((meta.dev(), meta.ino())) {
                    pending.push(PathBuf::from(name));
                }
            }
            // A regular file named `variables`: TensorFlow finds no variables in it,
            // which the load reports.
            Ok(meta) if meta.is_file() => {}
            Ok(meta) => return Err(not_regular(Path::new(name), meta.file_type())),
            Err(_) => {}
        }
    }
    while let Some(relative_dir) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(dir.join(&relative_dir)) else {
            continue;
        };
        for entry in listing.flatten() {
            entries += 1;
            if entries > MAX_SAVED_MODEL_ENTRIES {
                return Err(format!(
                    "{} and {} hold more than {MAX_SAVED_MODEL_ENTRIES} entries",
                    SAVED_MODEL_DIRS[0], SAVED_MODEL_DIRS[1]
                ));
            }
            let relative = relative_dir.join(entry.file_name());
            match std::fs::metadata(entry.path()) {
                Ok(meta) if meta.is_file() => {}
                Ok(meta) if meta.is_dir() => {
                    if seen_dirs.insert((meta.dev(), meta.ino())) {
                        pending.push(relative);
                    }
                }
                Ok(meta) => return Err(not_regular(&relative, meta.file_type())),
                Err(_) => {}
            }
        }
    }
    Ok(())
}
