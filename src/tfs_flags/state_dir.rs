//! Where a single model's server keeps its state: beside its versions, or in a
//! directory of the temporary directory that is this user's alone when the base
//! path cannot be written (a read-only model volume).

use std::path::{Path, PathBuf};

use super::{fail, TfsError};

/// A single model's base path must be a directory, as in TF Serving (whose source
/// finds no versions without one: "Could not find base path …"). It is checked
/// before anything is written under it, so a typo or a volume not yet mounted
/// stops the start instead of creating the directory and serving nothing.
pub(super) fn check_base_path(base: &Path, name: &str) -> Result<(), TfsError> {
    match std::fs::metadata(base) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(fail(format!(
            "--model_base_path {} of model {name} is not a directory (it holds the \
             model's versions: <base>/<version>/)",
            base.display()
        ))),
        Err(e) => Err(fail(format!(
            "Could not find base path {} for model {name}: {e}",
            base.display()
        ))),
    }
}

/// Where a single model's server keeps its state: beside the versions
/// (`<base>/.ferroserve`, hidden from the version scan) when that directory can
/// be written, else in the temporary directory (a read-only model volume, as
/// Kubernetes mounts them): see [`private_state_dir`].
pub(super) fn single_model_state_dir(base: &Path, name: &str) -> Result<PathBuf, TfsError> {
    let beside = base.join(".ferroserve");
    if std::fs::create_dir_all(&beside).is_ok() {
        let probe = beside.join(format!(".probe-{}", std::process::id()));
        if std::fs::write(&probe, b"").is_ok() {
            let _ = std::fs::remove_file(&probe);
            return Ok(beside);
        }
    }
    private_state_dir(&std::env::temp_dir(), base, name)
}

/// The state directory of a single model whose base path cannot be written:
/// `<temp>/ferroserve-<euid>-<hash>`, the hash of the canonical base path and the
/// model name. The temporary directory is shared by every user, so the name only
/// tells this server's directory apart: servers of other base paths or models
/// get their own (one of the same base and model, a replica, shares it), and the
/// directory must be this user's alone. It is made with mode 0700; one that is
/// already there must be a real directory (not a link) of this user that no
/// other user may write, else another user could have made it first and would
/// own the server's metadata database and job files. Then the start stops and
/// asks for `--state-dir`.
fn private_state_dir(temp: &Path, base: &Path, name: &str) -> Result<PathBuf, TfsError> {
    use sha2::{Digest, Sha256};
    let canonical = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let mut hash = Sha256::new();
    hash.update(canonical.as_os_str().as_encoded_bytes());
    // A NUL ends the path: no path holds one, so (path, name) pairs never collide.
    hash.update([0]);
    hash.update(name.as_bytes());
    let digest: String = hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let uid = effective_uid();
    let dir = temp.join(format!("ferroserve-{uid}-{digest}"));
    let refuse = |why: String| {
        fail(format!(
            "the base path {} of model {name} cannot be written, and its state directory \
             in the temporary directory, {}, {why}: give the server a directory of its \
             own with --state-dir (or a database with --database-url)",
            base.display(),
            dir.display()
        ))
    };
    match create_private_dir(&dir) {
        Ok(()) => return Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refuse(format!("cannot be made ({e})"))),
    }
    let meta =
        std::fs::symlink_metadata(&dir).map_err(|e| refuse(format!("cannot be examined ({e})")))?;
    if meta.file_type().is_symlink() {
        return Err(refuse(
            "is a symbolic link, which another user may have made".into(),
        ));
    }
    if !meta.is_dir() {
        return Err(refuse("is not a directory".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != uid {
            return Err(refuse(format!(
                "belongs to another user (uid {}, not this server's {uid})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(refuse(format!(
                "may be written by other users (mode {:o})",
                meta.mode() & 0o7777
            )));
        }
    }
    Ok(dir)
}

/// The user the server runs as: the owner its private directories must have.
#[cfg(unix)]
fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(not(unix))]
fn effective_uid() -> u32 {
    0
}

/// Makes `dir` (not its parents) readable and writable by its owner only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A single model whose base path cannot be written keeps its state in a
    /// directory of the temporary directory that is this user's alone: one per
    /// base path and model, made with mode 0700; one already there that is a
    /// link, or that others may write or own, stops the start.
    #[test]
    fn a_read_only_models_state_dir_is_private_and_its_own() {
        use std::os::unix::fs::PermissionsExt;
        let temp = tempfile::tempdir().unwrap();
        let bases = tempfile::tempdir().unwrap();
        let (a, b) = (bases.path().join("a"), bases.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let dir_a = private_state_dir(temp.path(), &a, "default").unwrap();
        let dir_b = private_state_dir(temp.path(), &b, "default").unwrap();
        assert_ne!(dir_a, dir_b);
        assert_ne!(dir_a, private_state_dir(temp.path(), &a, "other").unwrap());
        // The same base and model, another way of writing the path: a replica.
        assert_eq!(
            dir_a,
            private_state_dir(temp.path(), &bases.path().join("b/../a"), "default").unwrap()
        );
        let uid = effective_uid();
        let name = dir_a.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with(&format!("ferroserve-{uid}-")), "{name}");
        let mode = std::fs::metadata(&dir_a).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");

        // Another user's plant: writable by others, a link, a file.
        std::fs::set_permissions(&dir_a, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_state_dir(temp.path(), &a, "default").unwrap_err();
        assert!(
            e.0.contains("may be written by other users (mode 777)"),
            "{e}"
        );
        assert!(e.0.contains("--state-dir"), "{e}");
        std::fs::remove_dir(&dir_a).unwrap();
        std::os::unix::fs::symlink(&dir_b, &dir_a).unwrap();
        let e = private_state_dir(temp.path(), &a, "default").unwrap_err();
        assert!(e.0.contains("is a symbolic link"), "{e}");
        std::fs::remove_file(&dir_a).unwrap();
        std::fs::write(&dir_a, b"").unwrap();
        let e = private_state_dir(temp.path(), &a, "default").unwrap_err();
        assert!(e.0.contains("is not a directory"), "{e}");
        // Only root can give a directory away to show the owner's check.
        if uid == 0 {
            std::os::unix::fs::chown(&dir_b, Some(65534), None).unwrap();
            let e = private_state_dir(temp.path(), &b, "default").unwrap_err();
            assert!(e.0.contains("belongs to another user (uid 65534"), "{e}");
        }
    }
}
