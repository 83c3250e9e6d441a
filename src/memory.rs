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
//!
//! A trim that runs while the memory is still held (a slow upload, bodies a client
//! stalls for the read timeout) gives little back, and once that memory is freed
//! the size does not grow again to call for another. So while the process stays
//! more than [`TRIM_GROWTH`] above its resting size (the least seen after a trim),
//! trims are tried again, every [`RETRY_FIRST`] at first and twice as long after
//! each that gives little back, up to [`RETRY_MAX`]; one more that gives little
//! back then makes the size the resting size: a process that really holds the
//! memory (a large model loaded) pays a handful of trims over two minutes, then
//! none until it grows again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much the resident size may grow past the last trim before the next one.
pub const TRIM_GROWTH: u64 = 64 * 1024 * 1024;

/// How often the resident size is read.
pub const TRIM_POLL: Duration = Duration::from_secs(1);

/// The first wait before a trim is tried again while the process stays high above
/// its resting size.
pub const RETRY_FIRST: Duration = Duration::from_secs(2);

/// The longest wait between such trims.
pub const RETRY_MAX: Duration = Duration::from_secs(64);

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
/// [`TRIM_GROWTH`] since the last trim (or start), and again now and then while it
/// stays that far above its resting size.
#[derive(Debug)]
pub struct Trimmer {
    /// The size after the last trim (or at start): growth is measured from it.
    baseline: u64,
    /// The least size seen: what the process comes back to at rest.
    resting: u64,
    /// When a trim is tried again while the size stays high, and the wait after it.
    retry_at: Option<Instant>,
    retry_wait: Duration,
}

impl Trimmer {
    pub fn new() -> Trimmer {
        let now = resident_bytes().unwrap_or(0);
        Trimmer {
            baseline: now,
            resting: now,
            retry_at: None,
            retry_wait: RETRY_FIRST,
        }
    }

    /// Trims if the process grew past the baseline by more than [`TRIM_GROWTH`],
    /// or stays that far above its resting size and the retry's wait is over;
    /// answers whether it did. The size after the trim is the next baseline.
    pub fn trim_if_grown(&mut self) -> bool {
        self.poll(Instant::now())
    }

    /// [`Trimmer::trim_if_grown`] at time `at`.
    fn poll(&mut self, at: Instant) -> bool {
        let Some(now) = resident_bytes() else {
            return false;
        };
        self.resting = self.resting.min(now);
        let grown = now > self.baseline.saturating_add(TRIM_GROWTH);
        let high = now > self.resting.saturating_add(TRIM_GROWTH);
        if !grown {
            // Shrinking (a trim elsewhere, memory unmapped) lowers the baseline.
            self.baseline = self.baseline.min(now);
        }
        if !high {
            self.retry_at = None;
            self.retry_wait = RETRY_FIRST;
            return false;
        }
        if !grown && self.retry_at.is_some_and(|t| at < t) {
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
        self.resting = self.resting.min(after);
        // Still high: try again later, waiting longer each time a trim found
        // little to give back (the memory is in use).
        if after > self.resting.saturating_add(TRIM_GROWTH) {
            if self.retry_at.is_some() && now.saturating_sub(after) < TRIM_GROWTH / 4 {
                if self.retry_wait >= RETRY_MAX {
                    // In use (models loaded, caches filled): the size it rests at now.
                    self.resting = after;
                    self.retry_at = None;
                    self.retry_wait = RETRY_FIRST;
                    return true;
                }
                self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
            }
            self.retry_at = Some(at + self.retry_wait);
        }
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

    /// Whether this process is the one to run the test `name` (this module's,
    /// unqualified): the tests read the process's resident size, which the other
    /// unit tests' allocations, run at the same time, move by hundreds of MB (one
    /// such failed in CI). So each runs again alone, in a child process of this test
    /// binary (`--exact`), and passes when that child does; in the child, true.
    fn alone(name: &str) -> bool {
        const CHILD: &str = "FERROSERVE_TRIM_TEST_ALONE";
        if std::env::var_os(CHILD).is_some() {
            return true;
        }
        let module = module_path!().split_once("::").map_or("", |(_, m)| m);
        let test = format!("{module}::{name}");
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test.as_str(), "--exact", "--test-threads", "1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(child.status.success(), "{test}, run alone, failed: {out}");
        // A name that matches no test would run none and pass.
        assert!(
            out.contains("test result: ok. 1 passed"),
            "{test}, run alone, did not run: {out}"
        );
        false
    }

    /// Many small blocks, as a parsed JSON tree makes, freed: the resident size
    /// stays up until the trim gives the pages back.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_trim_returns_freed_small_blocks() {
        if !alone("a_trim_returns_freed_small_blocks") {
            return;
        }
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

    /// Memory still held when the growth called for a trim (bodies a client
    /// stalls), freed later: a later trim gives it back, though the size never
    /// grew again.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn memory_freed_after_a_trim_is_given_back_later() {
        if !alone("memory_freed_after_a_trim_is_given_back_later") {
            return;
        }
        let mut trimmer = Trimmer::new();
        let before = resident_bytes().unwrap();
        let mut blocks: Vec<Box<[u8; 96]>> = (0..2_000_000).map(|_| Box::new([7u8; 96])).collect();
        let start = Instant::now();
        assert!(trimmer.poll(start), "grown past the baseline");
        let held = resident_bytes().unwrap();
        assert!(
            held > before + TRIM_GROWTH,
            "still held: {before} -> {held}"
        );
        let kept: Vec<Box<[u8; 96]>> = blocks
            .iter_mut()
            .step_by(4096)
            .map(|b| std::mem::replace(b, Box::new([0u8; 96])))
            .collect();
        drop(blocks);
        assert!(
            !trimmer.poll(start + TRIM_POLL),
            "waits before trying again"
        );
        assert!(trimmer.poll(start + RETRY_MAX), "tried again");
        let after = resident_bytes().unwrap();
        assert!(
            after < held - TRIM_GROWTH,
            "the later trim gave memory back: {held} -> {after}"
        );
        assert!(!trimmer.poll(start + RETRY_MAX * 4), "back at rest");
        assert!(kept.iter().all(|b| b[0] == 7));
    }

    /// Memory that stays in use (a model loaded) is trimmed for a while, each
    /// retry later than the one before, then taken for the resting size.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn memory_that_stays_in_use_is_not_trimmed_for_ever() {
        if !alone("memory_that_stays_in_use_is_not_trimmed_for_ever") {
            return;
        }
        let mut trimmer = Trimmer::new();
        let held: Vec<Box<[u8; 96]>> = (0..2_000_000).map(|_| Box::new([7u8; 96])).collect();
        let start = Instant::now();
        let mut at = start;
        let mut trims = 0;
        while at < start + RETRY_MAX * 8 {
            if trimmer.poll(at) {
                trims += 1;
            }
            at += TRIM_POLL;
        }
        // The growth's trim, then retries 2, 4, 8, 16, 32 and 64 s apart.
        assert!(
            (7..=9).contains(&trims),
            "{trims} trims: then it rests at this size"
        );
        assert!(held.iter().all(|b| b[0] == 7));
    }
}
