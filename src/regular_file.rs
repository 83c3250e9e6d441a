//! Reading the files a repository holds (a model's `config.toml`, a version's
//! `warmup.json`, labels, dictionaries, the files fingerprinted for the cache) and
//! the model config file: only regular files, opened without waiting.
//!
//! Opening a FIFO for reading waits until something opens it for writing, and
//! reading a device such as `/dev/zero` never ends: either, named `config.toml` or
//! `warmup.json` (or a link to one), held the thread that read it for good, and with
//! the repository watcher's thread every model's updates. So a file is opened with
//! `O_NONBLOCK` (which changes nothing for a regular file), refused unless it is a
//! regular file (its links followed), and read up to a bound.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens `path` for reading if it is a regular file (through links); anything
/// else (a FIFO, a socket, a device, a directory) is an `InvalidInput` error
/// naming what it is. Never waits for a writer.
pub fn open(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "it is {}, not a regular file",
            ferroserve_core::file_kind::describe(kind)
        ),
    ))
}

/// Reads the regular file at `path` ([`open`]) whole, if it holds at most `max`
/// bytes; a larger one is an `InvalidData` error saying so (its bytes past the
/// bound are never read).
pub fn read(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open(path)?
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is larger than the {} read", size(max)),
        ));
    }
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read(path, max)?).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

/// `max` for a message: whole MiB or KiB where it is, else bytes.
fn size(max: u64) -> String {
    match max {
        m if m >= 1 << 20 && m % (1 << 20) == 0 => format!("{} MiB", m >> 20),
        m if m >= 1 << 10 && m % (1 << 10) == 0 => format!("{} KiB", m >> 10),
        m => format!("{m} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read_and_never_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        assert_eq!(read_to_string(&file, 6).unwrap(), "a = 1\n");
        let e = read(&file, 5).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "it is larger than the 5 bytes read");

        // A FIFO is refused at once: opening it to read would wait for a writer.
        let fifo = dir.path().join("warmup.json");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read(&fifo, 1 << 20).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("FIFO"), "{e}");
        // A link to a device that never ends is refused, not read.
        let link = dir.path().join("labels.txt");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = read(&link, 1 << 30).unwrap_err();
        assert!(e.to_string().contains("a device"), "{e}");
        let e = read(dir.path(), 10).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        assert_eq!(
            read(&dir.path().join("none"), 10).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
