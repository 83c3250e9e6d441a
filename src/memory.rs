//! Gives memory back to the operating system after a large request.
//!
//! glibc's malloc keeps freed small blocks in its arenas: one request that parsed a
//! 40 MB JSON body into millions of small values (even one refused afterwards for
//! its row count) left the process ~500 MB larger for good. [`Trimmer`] watches the
//! resident size once a second and, when it has grown by more than
//! [`TRIM_GROWTH`] since the last trim, asks malloc to return its free pages
//! (`malloc_trim(0)`, which since glibc 2.8 releases free pages inside every arena,
//! not only at the top of the heap). Under steady load the size stays put and no
//! trim runs, so the hot path never pays for page faults on memory it would reuse.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How much the resident size may grow past the last trim before the next one.
pub const TRIM_GROWTH: u64 = 64 * 1024 * 1024;

/// How often the resident size is read.
pub const TRIM_POLL: Duration = Duration::from_secs(1);

/// The resident set size of this process in bytes, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0)?)
}

/// Returns malloc's free pages to the operating system now.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks malloc's own free lists; any pad is valid.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Decides when to trim: after the resident size grew by more than
/// [`TRIM_GROWTH`] since the last trim (or start).
#[derive(Debug)]
pub struct Trimmer {
    baseline: u64,
}

impl Trimmer {
    pub fn new() -> Trimmer {
        Trimmer {
            baseline: resident_bytes().unwrap_or(0),
        }
    }

    /// Trims if the process grew past the baseline by more than [`TRIM_GROWTH`];
    /// answers whether it did. The size after the trim is the next baseline.
    pub fn trim_if_grown(&mut self) -> bool {
        let Some(now) = resident_bytes() else {
            return false;
        };
        if now <= self.baseline.saturating_add(TRIM_GROWTH) {
            // Shrinking (a trim elsewhere, memory unmapped) lowers the baseline.
            self.baseline = self.baseline.min(now);
            return false;
        }
        trim();
        let after = resident_bytes().unwrap_or(now);
        tracing::debug!(
            before_mb = now >> 20,
            after_mb = after >> 20,
            "returned free memory to the operating system"
        );
        self.baseline = after;
        true
    }

    /// Runs on its own thread until `stop` turns true (checked every [`TRIM_POLL`]).
    pub fn spawn(stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("ferroserve-trim".into())
            .spawn(move || {
                let mut trimmer = Trimmer::new();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TRIM_POLL);
                    trimmer.trim_if_grown();
                }
            })
    }
}

impl Default for Trimmer {
    fn default() -> Trimmer {
        Trimmer::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many small blocks, as a parsed JSON tree makes, freed: the resident size
    /// stays up until the trim gives the pages back.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_trim_returns_freed_small_blocks() {
        let mut trimmer = Trimmer::new();
        let before = resident_bytes().unwrap();
        // 2 M blocks of 96 bytes ≈ 200 MB of small allocations, then freed.
        // A few stay alive, as long-lived allocations do between a request's, so the
        // freed memory is not one block at the top of the heap that free() trims itself.
        let mut blocks: Vec<Box<[u8; 96]>> = (0..2_000_000).map(|_| Box::new([7u8; 96])).collect();
        let peak = resident_bytes().unwrap();
        assert!(peak > before + TRIM_GROWTH, "{before} -> {peak}");
        let kept: Vec<Box<[u8; 96]>> = blocks
            .iter_mut()
            .step_by(4096)
            .map(|b| std::mem::replace(b, Box::new([0u8; 96])))
            .collect();
        drop(blocks);
        let freed = resident_bytes().unwrap();
        assert!(
            freed > before + TRIM_GROWTH,
            "malloc kept the freed blocks: {before} -> {freed}"
        );
        assert!(trimmer.trim_if_grown(), "grown past the baseline");
        let after = resident_bytes().unwrap();
        assert!(
            after < freed - TRIM_GROWTH,
            "trim gave memory back: {freed} -> {after}"
        );
        assert!(!trimmer.trim_if_grown(), "no growth since the trim");
        assert!(kept.iter().all(|b| b[0] == 7));
    }
}
