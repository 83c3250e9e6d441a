//! Path confinement: whether a path a client or a config names lies under the
//! directories the server was given (model base paths under `--model-roots`, job
//! files and SQLite sinks under `--data-dir`), symbolic links and `..` resolved as
//! the kernel would follow them when the path is created or opened.

use std::path::{Component, Path, PathBuf};

/// Whether `path` lies under one of `roots`, after resolving symbolic links and
/// `..` in the part of the path that exists. A path that does not exist yet is
/// judged by its nearest existing ancestor plus the remaining plain components; a
/// link to nothing is judged by its target (whatever creates the path creates
/// that), and a loop is under no root.
pub fn is_under_roots(path: &Path, roots: &[PathBuf]) -> bool {
    let Some(path) = resolve(path) else {
        return false;
    };
    roots
        .iter()
        .filter_map(|r| resolve(r))
        .any(|root| path.starts_with(&root))
}

/// The absolute, symlink-free form of `path` (see [`is_under_roots`]); `None`
/// when a component that does not exist is `..` or the path cannot be made absolute.
pub fn resolve(path: &Path) -> Option<PathBuf> {
    resolve_within(path, 0)
}

/// [`resolve`], `links` links to nothing followed so far (at most 40, as the
/// kernel follows).
fn resolve_within(path: &Path, links: usize) -> Option<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let mut existing = absolute.as_path();
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut out = canonical;
            for c in rest.iter().rev() {
                out.push(c);
            }
            return Some(out);
        }
        // It exists but cannot be resolved: a link to nothing, judged by its
        // target (whatever creates the path creates the target, wherever that
        // is), or a loop, or no access.
        if let Ok(meta) = existing.symlink_metadata() {
            if !meta.file_type().is_symlink() || links >= 40 {
                return None;
            }
            let target = std::fs::read_link(existing).ok()?;
            let mut followed = existing.parent()?.join(target);
            for c in rest.iter().rev() {
                followed.push(c);
            }
            return resolve_within(&followed, links + 1);
        }
        let name = existing.file_name()?;
        rest.push(name);
        existing = existing.parent()?;
        // A `..` or `.` in the part that does not exist cannot be resolved safely.
        if rest.iter().any(|c| {
            Path::new(c)
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        }) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_paths_must_lie_under_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir_all(root.join("iris")).unwrap();
        let roots = vec![root.clone()];
        assert!(is_under_roots(&root.join("iris"), &roots));
        assert!(is_under_roots(&root.join("not_yet"), &roots));
        assert!(is_under_roots(&root, &roots));
        assert!(!is_under_roots(Path::new("/proc"), &roots));
        assert!(!is_under_roots(&root.join("../outside"), &roots));
        assert!(!is_under_roots(&root.join("missing/../../x"), &roots));
        assert!(
            !is_under_roots(&dir.path().join("repo2"), &roots),
            "prefix is not a parent"
        );
        // A symbolic link inside the root that points out of it is outside.
        std::os::unix::fs::symlink("/proc", root.join("escape")).unwrap();
        assert!(!is_under_roots(&root.join("escape"), &roots));
        assert!(!is_under_roots(&root.join("escape/self"), &roots));
        // So is a link to nothing: creating the path would create its target,
        // outside the root, even when the target's name is under it.
        std::os::unix::fs::symlink(dir.path().join("out/new.db"), root.join("new.db")).unwrap();
        assert!(!is_under_roots(&root.join("new.db"), &roots));
        // One whose target is under a root is under it (a model not mounted yet).
        std::os::unix::fs::symlink(root.join("later"), root.join("dangling_in")).unwrap();
        assert!(is_under_roots(&root.join("dangling_in"), &roots));
        assert!(is_under_roots(&root.join("dangling_in/x"), &roots));
        std::os::unix::fs::symlink("../out", root.join("relative_out")).unwrap();
        assert!(!is_under_roots(&root.join("relative_out"), &roots));
        // A loop resolves to nothing.
        std::os::unix::fs::symlink(root.join("loop_b"), root.join("loop_a")).unwrap();
        std::os::unix::fs::symlink(root.join("loop_a"), root.join("loop_b")).unwrap();
        assert!(!is_under_roots(&root.join("loop_a"), &roots));
    }
}
