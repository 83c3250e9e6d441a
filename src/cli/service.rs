//! Running as a service without systemd: `ferroserve serve --pid-file FILE` writes
//! its pid there once it listens (and removes the file when it exits);
//! `ferroserve stop --pid-file FILE` sends SIGTERM to that process, only if it is
//! a ferroserve, and waits for it to exit. A unit for systemd is in
//! `deploy/systemd/ferroserve.service`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::client::note;

/// The pid a file names, if it names one.
fn read_pid(path: &Path) -> anyhow::Result<Option<u32>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let pid = text.trim().parse::<u32>().with_context(|| {
                format!("{} does not hold a process id: {text:?}", path.display())
            })?;
            Ok(Some(pid))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Whether `pid` is a running ferroserve server (`ferroserve serve`, or the binary
/// under TF Serving's name), so that a stale file whose pid was reused never makes
/// us signal a stranger, nor a ferroserve client (`ferroserve predict`, say).
fn is_ferroserve(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|b| *b == 0);
    let argv0 = args.next().unwrap_or_default();
    let name = Path::new(std::str::from_utf8(argv0).unwrap_or_default())
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    // This very binary under another name (a link, a copy renamed) is one too.
    let same_binary = || {
        let theirs = std::fs::read_link(format!("/proc/{pid}/exe"));
        matches!((theirs, std::env::current_exe()), (Ok(a), Ok(b)) if a == b)
    };
    ((name == "ferroserve" || same_binary()) && args.next() == Some(b"serve".as_slice()))
        || name == crate::tfs_flags::TFS_BINARY
}

/// Held while the server runs: the pid file, removed on drop.
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's pid to `path`; refuses when the file names a
    /// ferroserve that still runs. A stale file is replaced.
    pub fn create(path: &Path) -> anyhow::Result<PidFile> {
        if let Some(pid) = read_pid(path)? {
            if pid != std::process::id() && is_ferroserve(pid) {
                bail!(
                    "{} names a running ferroserve (pid {pid}): stop it first (ferroserve stop --pid-file {})",
                    path.display(),
                    path.display()
                );
            }
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: another server may have taken the file over.
        if read_pid(&self.path).ok().flatten() == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `ferroserve stop --pid-file FILE [--timeout S]`: 0 once the server has exited
/// (or none was running: the file is absent or stale), 1 when it is still running
/// after the timeout.
pub fn stop(path: &Path, timeout: Duration) -> anyhow::Result<i32> {
    let Some(pid) = read_pid(path)? else {
        note(format_args!("no {}: no server to stop", path.display()));
        return Ok(0);
    };
    if !is_ferroserve(pid) {
        note(format_args!(
            "pid {pid} in {} is not a running ferroserve server: nothing to stop (the file is left as it is)",
            path.display()
        ));
        return Ok(0);
    }
    let pid_t = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) with a pid checked above to be a ferroserve process and a
    // valid signal number; it touches no memory.
    if unsafe { libc::kill(pid_t, libc::SIGTERM) } != 0 {
        bail!(
            "cannot signal pid {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    note(format_args!(
        "SIGTERM sent to ferroserve (pid {pid}); waiting for it to drain and exit"
    ));
    let deadline = Instant::now() + timeout;
    while is_ferroserve(pid) {
        if Instant::now() >= deadline {
            note(format_args!("pid {pid} still runs after {timeout:?}"));
            return Ok(super::client::EXIT_FAILED);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    note("stopped");
    Ok(0)
}
